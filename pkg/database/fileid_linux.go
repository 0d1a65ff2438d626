package database

import (
	"os"
	"syscall"
)

// fileID is what tells one file's contents from another's without reading
// them: a write, a truncation or a rename over the path changes one of
// these, and the change time cannot be set from user space.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime syscall.Timespec
}

func idOf(fi os.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}, true
}
