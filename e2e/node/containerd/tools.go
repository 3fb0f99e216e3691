//go:build tools

// Package tools pins containerd's daemon, its runc shim and ctr, which the real node builds from their Go
// module (e2e/node/node.sh build); nothing here is our code.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
