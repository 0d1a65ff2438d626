package prometheus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/rollguard/rollguard/pkg/source"
)

// maxInternedValues is how many distinct values of one label name are
// shared between series before that name counts as high-cardinality (a
// pod or deployment name) and its values are no longer looked up.
const maxInternedValues = 64

var errVectorSyntax = errors.New("vector: unexpected JSON")

// vectorParser decodes a vector's JSON (already checked valid by
// encoding/json, which hands it to instantResult.UnmarshalJSON) into
// samples with one labels map each. Compared with encoding/json's reflect
// path it allocates no per-key temporaries, sizes each map once, and shares
// label names and low-cardinality values (namespace, job) between series,
// which at 10,000 series is most of the garbage left after dropping
// client_golang.
type vectorParser struct {
	b     []byte
	i     int
	names map[string]*labelName
	pairs [][2]string
	// backing holds every matrix element's points: one growing array for
	// the whole answer instead of a few per series.
	backing []source.Point
}

type labelName struct {
	name   string
	values map[string]string // nil once the name is high-cardinality
}

func parseVector(b []byte) ([]vectorSample, error) {
	p := vectorParser{b: b, names: make(map[string]*labelName)}
	var out []vectorSample
	if !p.consume('[') {
		return nil, errVectorSyntax
	}
	if p.consume(']') {
		return []vectorSample{}, nil
	}
	for {
		smp, err := p.sample()
		if err != nil {
			return nil, err
		}
		out = append(out, smp)
		if p.consume(',') {
			continue
		}
		if p.consume(']') {
			return out, nil
		}
		return nil, errVectorSyntax
	}
}

// consume skips white space and then c if it is next.
func (p *vectorParser) consume(c byte) bool {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *vectorParser) sample() (vectorSample, error) {
	var smp vectorSample
	if !p.consume('{') {
		return smp, errVectorSyntax
	}
	if p.consume('}') {
		return smp, nil
	}
	for {
		key, escaped, err := p.str()
		if err != nil {
			return smp, err
		}
		if !p.consume(':') {
			return smp, errVectorSyntax
		}
		switch {
		case !escaped && string(key) == "metric":
			if smp.Metric, err = p.metric(); err != nil {
				return smp, err
			}
		case !escaped && string(key) == "value":
			start := p.i
			if err := p.skip(); err != nil {
				return smp, err
			}
			if err := smp.Value.UnmarshalJSON(p.b[start:p.i]); err != nil {
				return smp, err
			}
		case !escaped && string(key) == "values":
			// A matrix element (range query): [[ts, "value"], ...].
			if smp.Values, err = p.points(); err != nil {
				return smp, err
			}
			smp.matrix = true
		default:
			// "histogram" of a native histogram sample, or fields
			// added later.
			if err := p.skip(); err != nil {
				return smp, err
			}
		}
		if p.consume(',') {
			continue
		}
		if p.consume('}') {
			if smp.matrix {
				// p.pairs still holds this element's labels.
				smp.key = p.pairKey()
			}
			return smp, nil
		}
		return smp, errVectorSyntax
	}
}

// pairKey is labelKey of the labels in p.pairs, built without a map walk
// or a sort of its own (Prometheus writes label names sorted already).
func (p *vectorParser) pairKey() string {
	ps := p.pairs
	n := 0
	for i := 1; i < len(ps); i++ {
		for j := i; j > 0 && ps[j][0] < ps[j-1][0]; j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
	for _, kv := range ps {
		n += len(kv[0]) + len(kv[1]) + 2
	}
	b := make([]byte, 0, n)
	for _, kv := range ps {
		b = append(append(append(append(b, kv[0]...), 0), kv[1]...), 0)
	}
	return string(b)
}

// points reads a matrix element's [[ts, "value"], ...], dropping the
// points whose value is not a finite number. Timestamps are Unix seconds
// with at most millisecond precision.
func (p *vectorParser) points() ([]source.Point, error) {
	if !p.consume('[') {
		return nil, fmt.Errorf("%w: values is not an array", errVectorSyntax)
	}
	first := len(p.backing)
	if p.consume(']') {
		return nil, nil
	}
	for {
		start := p.i
		if err := p.skip(); err != nil {
			return nil, err
		}
		pair := bytes.TrimSpace(p.b[start:p.i])
		if len(pair) < 2 || pair[0] != '[' || pair[len(pair)-1] != ']' {
			return nil, errors.New("sample: want a [timestamp, \"value\"] pair")
		}
		c := bytes.IndexByte(pair, ',')
		if c < 0 {
			return nil, errors.New("sample: want a [timestamp, \"value\"] pair")
		}
		ts, err := strconv.ParseFloat(string(bytes.TrimSpace(pair[1:c])), 64)
		if err != nil {
			return nil, fmt.Errorf("sample timestamp: %w", err)
		}
		v, err := parsePair(pair)
		if err != nil {
			return nil, err
		}
		if finite(v) {
			p.backing = append(p.backing, source.Point{Time: time.UnixMilli(int64(math.Round(ts * 1000))).UTC(), Value: v})
		}
		if p.consume(',') {
			continue
		}
		if p.consume(']') {
			// A full slice expression: the next element's appends to the
			// backing array must not show through this one's points.
			return p.backing[first:len(p.backing):len(p.backing)], nil
		}
		return nil, errVectorSyntax
	}
}

func (p *vectorParser) metric() (map[string]string, error) {
	if p.consume('n') {
		// null: the caller gives the Series an empty map.
		p.i += len("ull")
		return nil, nil
	}
	if !p.consume('{') {
		return nil, fmt.Errorf("%w: metric is not an object", errVectorSyntax)
	}
	p.pairs = p.pairs[:0]
	if !p.consume('}') {
		for {
			k, kesc, err := p.str()
			if err != nil {
				return nil, err
			}
			if !p.consume(':') {
				return nil, errVectorSyntax
			}
			v, vesc, err := p.str()
			if err != nil {
				return nil, err
			}
			name := p.name(k, kesc)
			p.pairs = append(p.pairs, [2]string{name.name, p.value(name, v, vesc)})
			if p.consume(',') {
				continue
			}
			if p.consume('}') {
				break
			}
			return nil, errVectorSyntax
		}
	}
	m := make(map[string]string, len(p.pairs))
	for _, kv := range p.pairs {
		m[kv[0]] = kv[1]
	}
	return m, nil
}

func (p *vectorParser) name(raw []byte, escaped bool) *labelName {
	if !escaped {
		if n, ok := p.names[string(raw)]; ok {
			return n
		}
	}
	s := unquote(raw, escaped)
	if n, ok := p.names[s]; ok {
		return n
	}
	n := &labelName{name: s, values: make(map[string]string)}
	p.names[s] = n
	return n
}

func (p *vectorParser) value(n *labelName, raw []byte, escaped bool) string {
	if n.values == nil || escaped {
		return unquote(raw, escaped)
	}
	if v, ok := n.values[string(raw)]; ok {
		return v
	}
	v := string(raw)
	if len(n.values) >= maxInternedValues {
		n.values = nil
		return v
	}
	n.values[v] = v
	return v
}

// str reads a JSON string and returns its raw contents (quotes stripped)
// and whether it holds escapes.
func (p *vectorParser) str() ([]byte, bool, error) {
	if !p.consume('"') {
		return nil, false, fmt.Errorf("%w: want a string", errVectorSyntax)
	}
	start, escaped := p.i, false
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case '\\':
			escaped = true
			p.i += 2
			continue
		case '"':
			raw := p.b[start:p.i]
			p.i++
			return raw, escaped, nil
		}
		p.i++
	}
	return nil, false, errVectorSyntax
}

// skip passes over one JSON value of any kind.
func (p *vectorParser) skip() error {
	p.consume(' ')
	depth := 0
	for p.i < len(p.b) {
		switch c := p.b[p.i]; c {
		case '"':
			if _, _, err := p.str(); err != nil {
				return err
			}
			if depth == 0 {
				return nil
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return nil // end of the enclosing object: a scalar ended
			}
			depth--
			if depth == 0 {
				p.i++
				return nil
			}
		case ',':
			if depth == 0 {
				return nil
			}
		}
		p.i++
	}
	if depth != 0 {
		return errVectorSyntax
	}
	return nil
}

// unquote returns raw as a string, decoding escapes when there are any.
func unquote(raw []byte, escaped bool) string {
	if !escaped {
		return string(raw)
	}
	var s string
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	if err := json.Unmarshal(q, &s); err != nil {
		return string(raw)
	}
	return s
}
