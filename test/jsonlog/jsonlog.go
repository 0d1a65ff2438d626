// Package jsonlog follows a JSON-lines log that another process is still
// writing (rollguard's zap output), for the demo and the bench.
package jsonlog

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
)

// Tail reads, on each Next, the complete lines appended since the last
// call and decodes each into a T. Lines that are not JSON objects are
// skipped.
type Tail[T any] struct {
	path string
	off  int64
}

// NewTail follows the file at path from its start; the file need not exist
// yet.
func NewTail[T any](path string) *Tail[T] { return &Tail[T]{path: path} }

// Next returns the lines completed since the last call. A line still being
// written is left for the next call, so no line is read half.
func (t *Tail[T]) Next() []T {
	f, err := os.Open(t.path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(t.off, io.SeekStart); err != nil {
		return nil
	}
	var out []T
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return out
		}
		t.off += int64(len(line))
		var v T
		if json.Unmarshal(line, &v) == nil {
			out = append(out, v)
		}
	}
}

// Read decodes the whole file at path.
func Read[T any](path string) []T { return NewTail[T](path).Next() }
