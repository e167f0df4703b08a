// Command openbao is OpenBao, a Vault-compatible server, built from Go
// modules so Vestibule's tests can run a real one. It lives in a module of
// its own, out of Vestibule's dependency graph.
package main

import (
	"os"

	"github.com/openbao/openbao/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
