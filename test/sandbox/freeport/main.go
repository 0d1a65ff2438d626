// Command freeport prints N distinct free TCP ports on 127.0.0.1, one per
// line. The sandbox scripts use it instead of guessing: the kernel hands out
// each port, and every listener is held open until all N are chosen so the
// same port is never printed twice.
//
// A port can still be taken between this program exiting and a component
// binding it; test/sandbox/up checks each port again just before use and
// names the component when it is busy.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	n := 1
	if len(args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: freeport [N]")
		return 2
	}
	if len(args) == 1 {
		v, err := strconv.Atoi(args[0])
		if err != nil || v < 1 || v > 64 {
			fmt.Fprintf(os.Stderr, "freeport: N must be 1..64, got %q\n", args[0])
			return 2
		}
		n = v
	}
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintf(os.Stderr, "freeport: listen on 127.0.0.1: %v\n", err)
			return 1
		}
		listeners = append(listeners, l)
	}
	for _, l := range listeners {
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
	}
	return 0
}
