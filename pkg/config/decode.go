package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"
)

// maxNodes bounds the nodes visited while decoding, so a document that
// expands aliases exponentially ("billion laughs") is refused instead of
// eating the daemon's memory. A large literal document (10,000 targets is
// about 500,000 nodes) is not an attack: the bound grows with the nodes
// written out, and only expansion beyond aliasFactor times that is refused.
const (
	maxNodes    = 200_000
	aliasFactor = 4
)

// literalNodes counts the nodes of a document without following aliases.
func literalNodes(n *yaml.Node) int {
	if n == nil {
		return 0
	}
	c := 1
	for _, k := range n.Content {
		c += literalNodes(k)
	}
	return c
}

// Load parses a configuration, applies defaults and validates it. It does
// not read secret files: call ResolveSecrets for that. Every problem is
// returned at once in an *Errors (errors.Is(err, ErrInvalid) holds).
func Load(data []byte) (*Config, error) {
	cfg, errs := load(data)
	if len(errs) > 0 {
		return nil, &Errors{List: errs}
	}
	return cfg, nil
}

// LoadFile is Load of a file. Errors name the file; relative secret file
// paths in it are later read relative to its directory.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config file: %w", err)
	}
	cfg, errs := load(data)
	if len(errs) > 0 {
		return nil, &Errors{File: path, List: errs}
	}
	cfg.baseDir = filepath.Dir(path)
	cfg.file = path
	// As Prometheus does: relative files of the HTTP client settings are
	// relative to the config file.
	cfg.setDirectory(cfg.baseDir)
	return cfg, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+):`)

func load(data []byte) (*Config, errList) {
	cfg := &Config{}
	cfg.setDefaults()

	root, err := parseDocument(data)
	if err != nil {
		e := &Error{Msg: err.Error()}
		if m := yamlLineRE.FindStringSubmatch(e.Msg); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
		}
		return nil, errList{e}
	}

	d := &decoder{given: map[string]bool{}, limit: max(maxNodes, aliasFactor*literalNodes(root))}
	if root != nil {
		d.decode(root, reflect.ValueOf(cfg).Elem(), "")
	}
	if d.tooLarge {
		return nil, d.errs
	}
	given := func(p string) bool { return d.given[p] }
	cfg.inherit(given)

	var verrs errList
	cfg.validate(&verrs, given)
	// A value that failed to decode keeps its default or zero value; do
	// not report it a second time as invalid.
	errs := d.errs
	for _, ve := range verrs {
		if !under(ve.Path, d.errs) {
			errs = append(errs, ve)
		}
	}
	return cfg, errs
}

// parseDocument returns the root node of the only document in data, or nil
// for an empty document.
func parseDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, err
	default:
		return nil, fmt.Errorf("yaml: line %d: a second YAML document; the configuration is one document", extra.Line)
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, nil
		}
		return doc.Content[0], nil
	}
	return &doc, nil
}

// under reports whether path is at or below the path of one of errs.
func under(path string, errs errList) bool {
	for _, e := range errs {
		if e.Path == "" || path == e.Path ||
			strings.HasPrefix(path, e.Path+".") || strings.HasPrefix(path, e.Path+"[") {
			return true
		}
	}
	return false
}

// decoder walks a YAML node tree and a Go value together. yaml.v3's own
// strict mode (KnownFields) stops at the first error and reports lines, not
// paths; walking the tree ourselves reports every unknown field and every
// bad value with its path.
type decoder struct {
	errs     errList
	given    map[string]bool
	shared   int // depth below an anchored or aliased node
	nodes    int
	limit    int
	tooLarge bool
}

// obsoleteUnmarshaler is the yaml.v2-style interface that
// prometheus/common's model.Duration implements; yaml.v3 still honours it.
type obsoleteUnmarshaler interface {
	UnmarshalYAML(unmarshal func(any) error) error
}

var (
	unmarshalerType         = reflect.TypeFor[yaml.Unmarshaler]()
	obsoleteUnmarshalerType = reflect.TypeFor[obsoleteUnmarshaler]()
	defaulterType           = reflect.TypeFor[defaulter]()
	textUnmarshalerType     = reflect.TypeFor[encoding.TextUnmarshaler]()
	durationType            = reflect.TypeFor[time.Duration]()
	httpClientConfigType    = reflect.TypeFor[commoncfg.HTTPClientConfig]()
)

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	shared := n.Anchor != ""
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n, shared = n.Alias, true
	}
	if shared {
		// Below an anchor or an alias, nodes may be decoded again: keep
		// them.
		d.shared++
		defer func() { d.shared-- }()
	}
	if d.tooLarge {
		return
	}
	if d.nodes++; d.nodes > d.limit {
		d.tooLarge = true
		d.errs = errList{{Path: path, Line: n.Line, Msg: fmt.Sprintf("document too large (more than %d nodes after expanding aliases)", d.limit)}}
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		switch v.Kind() {
		case reflect.Pointer, reflect.Map, reflect.Slice:
			v.SetZero()
		}
		// Anything else keeps its default.
		return
	}

	t := v.Type()
	if t.Kind() == reflect.Pointer {
		p := reflect.New(t.Elem())
		d.decode(n, p.Elem(), path)
		v.Set(p)
		return
	}
	if pt := reflect.PointerTo(t); pt.Implements(unmarshalerType) || pt.Implements(obsoleteUnmarshalerType) {
		if walkable[t] {
			// Decoded field by field like our own structs, so an unknown
			// or misspelt key is reported with its path, then checked the
			// way the type's own UnmarshalYAML would.
			if t == httpClientConfigType {
				// Its UnmarshalYAML starts from the defaults (follow
				// redirects, HTTP/2).
				v.Set(reflect.ValueOf(commoncfg.DefaultHTTPClientConfig))
			}
			d.decodeStruct(n, v, path)
			if val, ok := v.Addr().Interface().(validator); ok && !under(path, d.errs) {
				if err := val.Validate(); err != nil {
					d.errs.add(path, n.Line, "%v", err)
				}
			}
			return
		}
		if n.Kind != yaml.ScalarNode {
			d.errs.add(path, n.Line, "expected a scalar, got %s", describe(n))
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.errs.add(path, n.Line, "%s", typeErrorMsg(err))
		}
		return
	}

	switch t.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errs.add(path, n.Line, "expected a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		release := d.shared == 0 && n.Anchor == ""
		for i, c := range n.Content {
			d.decode(c, s.Index(i), indexPath(path, i))
			if release {
				// Decoded and reachable from nowhere else: let the
				// collector take this element's nodes now, so the tree of
				// a 10,000-target file and the config built from it are
				// not both live at the end.
				n.Content[i] = nil
			}
		}
		v.Set(s)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.Interface:
		// Free-form values (an OAuth2 claim): whatever YAML holds.
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.errs.add(path, n.Line, "%s", typeErrorMsg(err))
		}
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int64, reflect.Float64:
		if n.Kind != yaml.ScalarNode {
			d.errs.add(path, n.Line, "expected %s, got %s", kindName(t.Kind()), describe(n))
			return
		}
		if scalar(n, v) {
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.errs.add(path, n.Line, "cannot parse %q as %s", n.Value, kindName(t.Kind()))
		}
	default:
		// Only reachable if a field of an unsupported type is added.
		d.errs.add(path, n.Line, "unsupported field type %s", t)
	}
}

type pair struct{ key, val *yaml.Node }

// pairs returns the key/value pairs of a mapping, merge keys (<<) expanded
// first so the mapping's own keys override them.
func pairs(n *yaml.Node) (merged, own []pair) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			for val.Kind == yaml.AliasNode && val.Alias != nil {
				val = val.Alias
			}
			srcs := []*yaml.Node{val}
			if val.Kind == yaml.SequenceNode {
				srcs = val.Content
			}
			for _, s := range srcs {
				for s.Kind == yaml.AliasNode && s.Alias != nil {
					s = s.Alias
				}
				if s.Kind == yaml.MappingNode {
					m, o := pairs(s)
					merged = append(merged, m...)
					merged = append(merged, o...)
				}
			}
			continue
		}
		own = append(own, pair{k, val})
	}
	return merged, own
}

// entries yields the keys of mapping n with their pairs: first those a
// merge key (<<) brings in, then n's own, which override them. A key that
// is not a string, or an own key written twice, is reported (what names
// the kind of key in the message: field or key) and not yielded.
func (d *decoder) entries(n *yaml.Node, path, what string) iter.Seq2[string, pair] {
	return func(yield func(string, pair) bool) {
		merged, own := pairs(n)
		seen := map[string]int{}
		for i, p := range append(merged, own...) {
			if p.key.Kind != yaml.ScalarNode || p.key.ShortTag() == "!!null" {
				d.errs.add(path, p.key.Line, "expected a string key, got %s", describe(p.key))
				continue
			}
			name := p.key.Value
			if i >= len(merged) {
				if line, dup := seen[name]; dup {
					d.errs.add(keyPath(path, name), p.key.Line, "duplicate %s (first at line %d)", what, line)
					continue
				}
				seen[name] = p.key.Line
			}
			if !yield(name, p) {
				return
			}
		}
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errs.add(path, n.Line, "expected a mapping, got %s", describe(n))
		return
	}
	if reflect.PointerTo(v.Type()).Implements(defaulterType) {
		v.Addr().Interface().(defaulter).setDefaults()
	}
	fields := fieldsOf(v.Type())
	var rest reflect.Value // the ",inline" map, made on its first key
	for name, p := range d.entries(n, path, "field") {
		fp := keyPath(path, name)
		idx, ok := fields.byKey[name]
		if !ok && fields.inlineMap != nil {
			if !rest.IsValid() {
				rest = v.FieldByIndex(fields.inlineMap)
				if rest.IsNil() {
					rest.Set(reflect.MakeMap(rest.Type()))
				}
			}
			d.given[fp] = true
			ev := reflect.New(rest.Type().Elem()).Elem()
			d.decode(p.val, ev, fp)
			rest.SetMapIndex(reflect.ValueOf(name).Convert(rest.Type().Key()), ev)
			continue
		}
		if !ok {
			d.errs.add(fp, p.key.Line, "unknown field")
			continue
		}
		d.given[fp] = true
		d.decode(p.val, v.FieldByIndex(idx), fp)
	}
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errs.add(path, n.Line, "expected a mapping, got %s", describe(n))
		return
	}
	t := v.Type()
	if t.Key().Kind() != reflect.String {
		d.errs.add(path, n.Line, "unsupported map key type %s", t.Key())
		return
	}
	m := reflect.MakeMap(t)
	for name, p := range d.entries(n, path, "key") {
		kp := keyPath(path, name)
		d.given[kp] = true
		ev := reflect.New(t.Elem()).Elem()
		d.decode(p.val, ev, kp)
		m.SetMapIndex(reflect.ValueOf(name).Convert(t.Key()), ev)
	}
	v.Set(m)
}

var fieldCache sync.Map // reflect.Type → *structFields

// structFields maps the YAML keys of a struct type to field index paths.
type structFields struct {
	byKey map[string][]int
	// inlineMap is the index path of a `yaml:",inline"` map field, which
	// takes every key that is not a field; nil when there is none.
	inlineMap []int
}

// fieldsOf maps the YAML keys of a struct type to field index paths. Fields
// tagged "-" and unexported fields are not keys; the fields of a struct
// tagged ",inline" are keys of the outer mapping, as yaml.v2 and yaml.v3
// read them (prometheus/common's config types inline their proxy settings
// and their header map).
func fieldsOf(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	out := &structFields{byKey: map[string][]int{}}
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			idx := append(append([]int(nil), prefix...), i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" && slices.Contains(strings.Split(opts, ","), "inline") {
				switch f.Type.Kind() {
				case reflect.Struct:
					walk(f.Type, idx)
					continue
				case reflect.Map:
					out.inlineMap = idx
					continue
				}
			}
			switch name {
			case "-":
				continue
			case "":
				name = strings.ToLower(f.Name)
			}
			out.byKey[name] = idx
		}
	}
	walk(t, nil)
	fieldCache.Store(t, out)
	return out
}

// walkable are the struct types with their own UnmarshalYAML that are
// decoded field by field here: prometheus/common's HTTP client settings,
// the shape every Prometheus-ecosystem tool reads. Each of their
// UnmarshalYAML methods decodes the plain struct and then calls Validate,
// which decode does in the same order (TestHTTPConfigDecodesLikeUpstream
// holds the two together). Its other types either have no UnmarshalYAML
// (walked anyway) or are scalars (a URL, a TLS version, a secret).
var walkable = map[reflect.Type]bool{
	httpClientConfigType:                   true,
	reflect.TypeFor[commoncfg.BasicAuth](): true,
	reflect.TypeFor[commoncfg.OAuth2]():    true,
	reflect.TypeFor[commoncfg.TLSConfig](): true,
}

// validator is the check prometheus/common's config types run after
// decoding.
type validator interface{ Validate() error }

// describe names a node for an error message, with a scalar's value.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	default:
		return "an alias"
	}
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Float64:
		return "a number"
	default:
		return k.String()
	}
}

// typeErrorMsg turns an error of a field's own UnmarshalYAML into a
// message; yaml.v3 type errors carry "line N: " prefixes that the path
// already replaces.
func typeErrorMsg(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			if _, rest, ok := strings.Cut(m, ": "); ok && strings.HasPrefix(m, "line ") {
				m = rest
			}
			msgs[i] = m
		}
		return strings.Join(msgs, "; ")
	}
	return err.Error()
}

// scalar decodes the common plain scalars into a string, bool, int or
// float64 the way yaml.v3 would, without a yaml.v3 decoder per value
// (Node.Decode allocates one: 35 MB for a 10,000-target file). It reports
// false for anything else (other tags, octal or underscored numbers, YAML
// 1.1 booleans, overflow), which the caller hands to Node.Decode, so the
// result and the error text stay yaml.v3's. TestScalarMatchesYAML holds
// the two paths together.
func scalar(n *yaml.Node, v reflect.Value) bool {
	if reflect.PointerTo(v.Type()).Implements(textUnmarshalerType) {
		return false
	}
	tag := n.ShortTag()
	switch v.Kind() {
	case reflect.String:
		if tag == "!!binary" {
			return false
		}
		v.SetString(n.Value)
		return true
	case reflect.Bool:
		if tag != "!!bool" {
			return false
		}
		b, err := strconv.ParseBool(n.Value)
		if err != nil {
			return false
		}
		v.SetBool(b)
		return true
	case reflect.Int, reflect.Int64:
		if tag != "!!int" || v.Type() == durationType {
			return false
		}
		i, err := strconv.ParseInt(n.Value, 0, 64)
		if err != nil || v.OverflowInt(i) {
			return false
		}
		v.SetInt(i)
		return true
	case reflect.Float64:
		var f float64
		switch tag {
		case "!!int":
			i, err := strconv.ParseInt(n.Value, 0, 64)
			if err != nil {
				return false
			}
			f = float64(i)
		case "!!float":
			x, err := strconv.ParseFloat(n.Value, 64)
			if err != nil {
				return false
			}
			f = x
		default:
			return false
		}
		v.SetFloat(f)
		return true
	}
	return false
}
