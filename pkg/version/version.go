// Package version carries the build's version, stamped by the Makefile.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version is set with -ldflags "-X github.com/rollguard/rollguard/pkg/version.Version=...".
var Version = "dev"

// Info describes this build.
type Info struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	GoVersion string `json:"goVersion"`
}

// Get returns the build info, with the VCS revision when the binary has it.
func Get() Info {
	i := Info{Version: Version, GoVersion: runtime.Version(), Revision: "unknown"}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				i.Revision = s.Value
			}
		}
	}
	return i
}
