package config

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// referencePath is the configuration reference the README links to. It is
// generated from the doc comments of config.go, so it cannot drift from the
// structs: this test fails when it is stale. Regenerate with
//
//	UPDATE_REFERENCE=1 go test ./pkg/config -run TestConfigurationReference
const referencePath = "../../docs/configuration.md"

func TestConfigurationReference(t *testing.T) {
	got := renderReference(t)
	if os.Getenv("UPDATE_REFERENCE") != "" {
		if err := os.WriteFile(referencePath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatalf("%v: generate it with UPDATE_REFERENCE=1 go test ./pkg/config -run TestConfigurationReference", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: the config structs changed. Regenerate with UPDATE_REFERENCE=1 go test ./pkg/config -run TestConfigurationReference", referencePath)
	}
}

type refField struct {
	key, typ, doc string
	section       string // the struct type of a nested section, if any
}

func renderReference(t *testing.T) []byte {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "config.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string][]refField{}
	docs := map[string]string{}
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
			docs[ts.Name.Name] = oneLine(gd.Doc.Text())
			for _, field := range st.Fields.List {
				if field.Tag == nil || len(field.Names) == 0 || !field.Names[0].IsExported() {
					continue
				}
				tag, _ := strconv.Unquote(field.Tag.Value)
				key, _, _ := strings.Cut(reflect.StructTag(tag).Get("yaml"), ",")
				if key == "-" || key == "" {
					continue
				}
				typ, section := typeName(field.Type)
				types[ts.Name.Name] = append(types[ts.Name.Name], refField{key: key, typ: typ, doc: oneLine(field.Doc.Text()), section: section})
			}
		}
	}
	var b bytes.Buffer
	b.WriteString("# rollguard configuration reference\n\n")
	b.WriteString("Generated from the doc comments of `pkg/config/config.go` by `TestConfigurationReference`;\n")
	b.WriteString("do not edit by hand. Durations are Prometheus durations (`30s`, `5m`, `2h`). Secrets are\n")
	b.WriteString("only ever read from files or environment variables and are never logged.\n")
	seen := map[string]bool{}
	var walk func(typ, path string)
	walk = func(typ, path string) {
		if seen[typ] {
			return
		}
		seen[typ] = true
		if path == "" {
			b.WriteString("\n## top level\n\n")
		} else {
			fmt.Fprintf(&b, "\n## `%s`\n\n", path)
		}
		if d := docs[typ]; d != "" {
			fmt.Fprintf(&b, "%s\n\n", d)
		}
		b.WriteString("| field | type | meaning |\n|---|---|---|\n")
		for _, fl := range types[typ] {
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", fl.key, fl.typ, strings.ReplaceAll(fl.doc, "|", "\\|"))
		}
		for _, fl := range types[typ] {
			if fl.section == "" {
				continue
			}
			sub := path + "." + fl.key
			if path == "" {
				sub = fl.key
			}
			if strings.HasPrefix(fl.typ, "list") {
				sub += "[]"
			}
			walk(fl.section, sub)
		}
	}
	walk("Config", "")
	return b.Bytes()
}

func typeName(e ast.Expr) (string, string) {
	switch e := e.(type) {
	case *ast.Ident:
		switch e.Name {
		case "string", "bool", "int", "float64":
			return e.Name, ""
		case "Secret":
			return "secret", ""
		}
		return "section", e.Name
	case *ast.StarExpr:
		t, s := typeName(e.X)
		return t + " (optional)", s
	case *ast.ArrayType:
		t, s := typeName(e.Elt)
		return "list of " + t, s
	case *ast.MapType:
		k, _ := typeName(e.Key)
		v, _ := typeName(e.Value)
		return "map " + k + " → " + v, ""
	case *ast.SelectorExpr:
		if e.Sel.Name == "Duration" {
			return "duration", ""
		}
		return e.Sel.Name, ""
	}
	return fmt.Sprintf("%T", e), ""
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
