package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrInvalid is matched (errors.Is) by every *Errors: the configuration was
// rejected. Reload keeps the old configuration on it.
var ErrInvalid = errors.New("invalid configuration")

// Error is one problem in the configuration.
type Error struct {
	// Path of the offending value, e.g. "targets[0].triggers[1].for";
	// empty for a problem of the whole document (a YAML syntax error).
	Path string
	// Line in the file, when known (0 otherwise).
	Line int
	// Msg says what is wrong, with the offending value (never a secret).
	Msg string
}

// Error returns "path: msg".
func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errors is every problem found in one configuration, in document order for
// decoding problems, then in field order for validation problems.
type Errors struct {
	// File is the file's path when loaded by LoadFile.
	File string
	// List holds at least one error.
	List []*Error
}

// Error joins every problem on one line, prefixed by the file.
func (e *Errors) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if len(e.List) != 1 {
		fmt.Fprintf(&b, "%d errors: ", len(e.List))
	}
	for i, err := range e.List {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(err.Error())
	}
	return b.String()
}

// Lines renders one problem per line, compiler style ("file:line: path:
// msg"), for `rollguard validate`.
func (e *Errors) Lines() []string {
	out := make([]string, 0, len(e.List))
	for _, err := range e.List {
		var b strings.Builder
		if e.File != "" {
			b.WriteString(e.File)
			if err.Line > 0 {
				b.WriteString(":" + strconv.Itoa(err.Line))
			}
			b.WriteString(": ")
		} else if err.Line > 0 {
			b.WriteString("line " + strconv.Itoa(err.Line) + ": ")
		}
		b.WriteString(err.Error())
		out = append(out, b.String())
	}
	return out
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *Errors) Is(target error) bool { return target == ErrInvalid }

// Unwrap exposes each *Error to errors.As.
func (e *Errors) Unwrap() []error {
	out := make([]error, len(e.List))
	for i, err := range e.List {
		out[i] = err
	}
	return out
}

// errList collects problems.
type errList []*Error

func (l *errList) add(path string, line int, format string, args ...any) {
	*l = append(*l, &Error{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// addf records a validation problem (no line).
func (l *errList) addf(path, format string, args ...any) {
	l.add(path, 0, format, args...)
}

// indexPath returns "base[i]".
func indexPath(base string, i int) string {
	return base + "[" + strconv.Itoa(i) + "]"
}

// keyPath returns "base.key", or base["key"] when the key would be
// ambiguous in a dotted path.
func keyPath(base, key string) string {
	plain := key != ""
	for _, r := range key {
		if !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			plain = false
			break
		}
	}
	if !plain {
		return base + "[" + strconv.Quote(key) + "]"
	}
	if base == "" {
		return key
	}
	return base + "." + key
}
