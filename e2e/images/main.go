// Command images assembles the images of images.go from binaries built beforehand (`make
// images`), with no Docker daemon and no registry: each is an empty base plus one layer holding
// its binary, written to <out>/<name>.tar as a docker-archive, which `ctr images import` loads
// under the image's name. Same binaries, same bytes: every time in it is fixed.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// epoch is every time in the images (file mtimes, created), so that they are reproducible.
var epoch = time.Unix(0, 0).UTC()

// path is PATH in every image, as in distroless and Docker's defaults.
const path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// netBindService is the security.capability xattr granting CAP_NET_BIND_SERVICE (bit 10),
// permitted and effective: struct vfs_cap_data, revision 2, little-endian.
var netBindService = []byte{
	0x01, 0x00, 0x00, 0x02, // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
	0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, // permitted, inheritable (capabilities 0-31)
	0, 0, 0, 0, 0, 0, 0, 0, // permitted, inheritable (capabilities 32-63)
}

func main() {
	root := flag.String("root", ".", "the repository root: binaries and -out are relative to it")
	out := flag.String("out", "target/images", "directory the archives are written to")
	var v Versions
	flag.StringVar(&v.Workspace, "version", "", "the workspace version (Cargo.toml): operator, sniffer and play tags")
	flag.StringVar(&v.Kubernetes, "kubernetes", "", "the k8s.io/kubernetes version pause is built from: its tag")
	flag.StringVar(&v.CoreDNS, "coredns", "", "the CoreDNS module version: its tag")
	flag.Parse()
	if err := run(*root, *out, v); err != nil {
		fmt.Fprintf(os.Stderr, "images: %v\n", err)
		os.Exit(1)
	}
}

func run(root, out string, v Versions) error {
	if v.Workspace == "" || v.Kubernetes == "" || v.CoreDNS == "" {
		return fmt.Errorf("-version, -kubernetes and -coredns are all required")
	}
	if err := os.MkdirAll(filepath.Join(root, out), 0o755); err != nil {
		return err
	}
	var report []string
	for _, image := range Images {
		tag, err := name.NewTag(Registry+"/"+image.Name+":"+image.Version(v), name.StrictValidation)
		if err != nil {
			return fmt.Errorf("%s: %w", image.Name, err)
		}
		archive := filepath.Join(out, image.Name+".tar")
		id, err := build(root, archive, tag, image)
		if err != nil {
			return fmt.Errorf("%s: %w", image.Name, err)
		}
		archived, err := os.Stat(filepath.Join(root, archive))
		if err != nil {
			return err
		}
		binary, err := os.Stat(filepath.Join(root, image.Binary))
		if err != nil {
			return err
		}
		report = append(report, fmt.Sprintf("  %-46s %-40s %8s  %8s  %s",
			tag.String(), archive, size(archived.Size()), size(binary.Size()), id.String()[:19]))
	}
	fmt.Println("images: written (load one with `ctr -n k8s.io images import <archive>`):")
	fmt.Printf("  %-46s %-40s %8s  %8s  %s\n", "image", "archive", "size", "unpacked", "ID")
	fmt.Println(strings.Join(report, "\n"))
	return nil
}

// size is a byte count for people: kB below a megabyte, MB above.
func size(bytes int64) string {
	if bytes < 1e6 {
		return fmt.Sprintf("%.0f kB", float64(bytes)/1e3)
	}
	return fmt.Sprintf("%.1f MB", float64(bytes)/1e6)
}

// build writes the image to root/archive and returns its ID (the config's digest).
func build(root, archive string, tag name.Tag, image Image) (v1.Hash, error) {
	binary, err := os.ReadFile(filepath.Join(root, image.Binary))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("its binary is not built (make images builds it first): %w", err)
	}
	layerBytes, err := layerTar(image.Name, binary, image.BindLowPorts)
	if err != nil {
		return v1.Hash{}, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	})
	if err != nil {
		return v1.Hash{}, err
	}
	img, err := mutate.ConfigFile(empty.Image, config(tag, image))
	if err != nil {
		return v1.Hash{}, err
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "make images: /" + image.Name + " from " + image.Binary,
		},
	})
	if err != nil {
		return v1.Hash{}, err
	}
	id, err := img.ConfigName()
	if err != nil {
		return v1.Hash{}, err
	}
	// Written beside, then renamed: an interrupted build leaves no half archive behind.
	final := filepath.Join(root, archive)
	partial := final + ".partial"
	if err := tarball.WriteToFile(partial, tag, img); err != nil {
		return v1.Hash{}, err
	}
	return id, os.Rename(partial, final)
}

// config is the image's configuration, before its layer is appended.
func config(tag name.Tag, image Image) *v1.ConfigFile {
	ports := map[string]struct{}{}
	for _, p := range image.Ports {
		ports[p] = struct{}{}
	}
	if len(ports) == 0 {
		ports = nil
	}
	return &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: epoch},
		Config: v1.Config{
			Entrypoint:   []string{"/" + image.Name},
			User:         image.User,
			WorkingDir:   "/",
			Env:          []string{path},
			ExposedPorts: ports,
			Labels: map[string]string{
				"org.opencontainers.image.source":      Source,
				"org.opencontainers.image.title":       image.Name,
				"org.opencontainers.image.version":     tag.TagStr(),
				"org.opencontainers.image.licenses":    License,
				"org.opencontainers.image.description": image.Description,
			},
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
}

// layerTar is a tar holding the binary as /<name>, owned by root, mode 0755, at epoch.
func layerTar(name string, binary []byte, bindLowPorts bool) ([]byte, error) {
	header := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Mode:     0o755,
		Size:     int64(len(binary)),
		ModTime:  epoch,
		Format:   tar.FormatPAX,
	}
	if bindLowPorts {
		header.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": string(netBindService)}
	}
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	if err := w.WriteHeader(header); err != nil {
		return nil, err
	}
	if _, err := w.Write(binary); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
