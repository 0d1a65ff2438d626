package config

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// The doc comments of the config types are the reference of the file
// format: every YAML field must have one that says its default or that it
// is required, and a static default must be the one the code applies.
func TestFieldDocsStateDefaults(t *testing.T) {
	defaults := map[string]reflect.Value{}
	for _, v := range []any{&Config{}, &Global{}, &Prometheus{}, &Database{}, &Kubernetes{}, &LeaderElection{},
		&Interlocks{}, &API{}, &Notify{}, &PagerDuty{}, &Slack{}, &Webhook{}, &Alertmanager{}, &Templates{}, &Template{}, &Target{},
		&Trigger{}, &Rollback{}, &RollbackDatabase{}, &PoolRecovery{}, &MultiRegion{}, &TargetNotify{}, &GitOps{}, &IncidentStore{}, &NamedToken{}} {
		if d, ok := v.(defaulter); ok {
			d.setDefaults()
		}
		rv := reflect.ValueOf(v).Elem()
		defaults[rv.Type().Name()] = rv
	}
	checked := 0
	for _, st := range configStructs(t) {
		ts := st.spec
		def, ok := defaults[ts.Name.Name]
		if !ok {
			t.Errorf("type %s: add it to this test", ts.Name.Name)
			continue
		}
		for _, field := range st.typ.Fields.List {
			key, ok := yamlKey(field)
			if !ok {
				continue
			}
			name := ts.Name.Name + "." + field.Names[0].Name
			doc := strings.Join(strings.Fields(field.Doc.Text()), " ")
			checked++
			if len(doc) < 20 {
				t.Errorf("%s (%s): doc comment missing or too short: %q", name, key, doc)
				continue
			}
			v := def.FieldByName(field.Names[0].Name)
			if v.Kind() == reflect.Struct {
				// A section: its own fields state their defaults.
				continue
			}
			if !strings.Contains(doc, "Default") && !strings.Contains(doc, "equired") {
				t.Errorf("%s (%s): doc comment says neither its default nor that it is required: %q", name, key, doc)
			}
			if v.IsZero() {
				continue
			}
			forms := defaultForms(v.Interface())
			found := false
			for _, form := range forms {
				found = found || strings.Contains(doc, "Default "+form)
			}
			if !found {
				t.Errorf("%s (%s): doc comment must say \"Default %s\" (the applied default): %q", name, key, forms[0], doc)
			}
		}
	}
	if checked < 80 {
		t.Errorf("checked %d fields, expected the whole schema", checked)
	}
}

// configStruct is a struct type declared in config.go.
type configStruct struct {
	decl *ast.GenDecl
	spec *ast.TypeSpec
	typ  *ast.StructType
}

// configStructs are the struct types of config.go, the file format's
// schema, in their order there.
func configStructs(t *testing.T) []configStruct {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "config.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var out []configStruct
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok {
			continue
		}
		for _, spec := range gd.Specs {
			ts, ok := spec.(*ast.TypeSpec)
			if !ok {
				continue
			}
			if st, ok := ts.Type.(*ast.StructType); ok {
				out = append(out, configStruct{decl: gd, spec: ts, typ: st})
			}
		}
	}
	return out
}

// yamlKey is field's YAML key; false for a field the file format does not
// have (embedded, unexported, untagged or yaml:"-").
func yamlKey(field *ast.Field) (string, bool) {
	if field.Tag == nil || len(field.Names) == 0 || !field.Names[0].IsExported() {
		return "", false
	}
	tag, _ := strconv.Unquote(field.Tag.Value)
	key, _, _ := strings.Cut(reflect.StructTag(tag).Get("yaml"), ",")
	return key, key != "-"
}

// defaultForms renders a default the ways a doc comment may write it.
func defaultForms(v any) []string {
	switch v := v.(type) {
	case model.Duration:
		d := time.Duration(v)
		forms := []string{v.String(), fmt.Sprintf("%ds", int64(d/time.Second))}
		if d%time.Minute == 0 {
			forms = append(forms, fmt.Sprintf("%dm", int64(d/time.Minute)))
		}
		if d%time.Hour == 0 {
			forms = append(forms, fmt.Sprintf("%dh", int64(d/time.Hour)))
		}
		return forms
	case []int:
		return []string{fmt.Sprint(v)}
	default:
		return []string{fmt.Sprint(v)}
	}
}
