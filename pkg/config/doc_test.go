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
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "config.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	defaults := map[string]reflect.Value{}
	for _, v := range []any{&Config{}, &Global{}, &Prometheus{}, &Database{}, &Kubernetes{}, &LeaderElection{},
		&Interlocks{}, &API{}, &Notify{}, &PagerDuty{}, &Slack{}, &Webhook{}, &Alertmanager{}, &Templates{}, &Template{}, &Target{},
		&Trigger{}, &Rollback{}, &RollbackDatabase{}, &PoolRecovery{}, &MultiRegion{}, &TargetNotify{}, &GitOps{}} {
		if d, ok := v.(defaulter); ok {
			d.setDefaults()
		}
		rv := reflect.ValueOf(v).Elem()
		defaults[rv.Type().Name()] = rv
	}
	checked := 0
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
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				continue
			}
			def, ok := defaults[ts.Name.Name]
			if !ok {
				t.Errorf("type %s: add it to this test", ts.Name.Name)
				continue
			}
			for _, field := range st.Fields.List {
				if field.Tag == nil || len(field.Names) == 0 || !field.Names[0].IsExported() {
					continue
				}
				tag, _ := strconv.Unquote(field.Tag.Value)
				key, _, _ := strings.Cut(reflect.StructTag(tag).Get("yaml"), ",")
				if key == "-" {
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
	}
	if checked < 80 {
		t.Errorf("checked %d fields, expected the whole schema", checked)
	}
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
