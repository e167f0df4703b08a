// Package migrations holds Vestibule's SQL schema migrations, embedded in the
// binary. One file serves both databases; a migration that needs a dialect's
// own feature ships as a pair NNNNN_name.sqlite.sql / NNNNN_name.postgres.sql
// and each database sees only its own.
package migrations

import (
	"embed"
	"io/fs"
	"path"
	"strings"
)

//go:embed *.sql
var files embed.FS

// For returns the migrations a database of the given dialect ("sqlite" or
// "postgres") runs.
func For(dialect string) fs.FS { return Filter(files, dialect) }

// Filter hides from fsys the .sql files meant for another dialect.
func Filter(fsys fs.FS, dialect string) fs.FS { return dialectFS{fsys, dialect} }

type dialectFS struct {
	fs.FS
	dialect string
}

func (d dialectFS) ReadDir(name string) ([]fs.DirEntry, error) {
	entries, err := fs.ReadDir(d.FS, name)
	if err != nil {
		return nil, err
	}
	kept := entries[:0]
	for _, e := range entries {
		if d.wants(e.Name()) {
			kept = append(kept, e)
		}
	}
	return kept, nil
}

func (d dialectFS) Open(name string) (fs.File, error) {
	if !d.wants(path.Base(name)) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return d.FS.Open(name)
}

func (d dialectFS) wants(name string) bool {
	base := strings.TrimSuffix(name, ".sql")
	if base == name {
		return true
	}
	ext := path.Ext(base)
	switch ext {
	case ".sqlite", ".postgres":
		return ext == "."+d.dialect
	}
	return true
}
