package main

// The one description of every image `make images` builds. The binaries are built beforehand
// by the Makefile's images target, at the paths below (relative to the repository root).

// Image is one single-binary image: the binary at /<Name>, run as User.
type Image struct {
	// Name is the last element of the image name and of the binary inside it.
	Name string
	// Binary is where the build leaves it, relative to the repository root.
	Binary string
	// Version picks the tag from the versions the Makefile passes.
	Version func(Versions) string
	// User is uid:gid.
	User string
	// Ports are the ExposedPorts ("8443/tcp"): the ports the chart or its deployment uses.
	Ports []string
	// BindLowPorts gives the binary the file capability CAP_NET_BIND_SERVICE, so that a
	// non-root user can listen on port 53 (as upstream CoreDNS's image does).
	BindLowPorts bool
	// Description is the org.opencontainers.image.description label.
	Description string
}

// Versions are the tags' sources: the workspace (Cargo.toml) and the Go modules built from.
type Versions struct {
	Workspace  string
	Kubernetes string
	CoreDNS    string
}

// Registry prefixes every image name; the chart's defaults use it.
const Registry = "ghcr.io/trafficmap"

// Source is the org.opencontainers.image.source label (the chart's home).
const Source = "https://github.com/trafficmap/trafficmap"

// License of every binary here (ours, Kubernetes' pause, CoreDNS).
const License = "Apache-2.0"

const muslRelease = "target/x86_64-unknown-linux-musl/release/"

func workspace(v Versions) string  { return v.Workspace }
func kubernetes(v Versions) string { return v.Kubernetes }
func coreDNS(v Versions) string    { return v.CoreDNS }

// Images lists what `make images` writes, each to target/images/<Name>.tar.
var Images = []Image{
	{
		Name:        "trafficmap-operator",
		Binary:      muslRelease + "trafficmap-operator",
		Version:     workspace,
		User:        "65532:65532", // the chart's runAsUser/runAsGroup
		Ports:       []string{"8443/tcp", "8080/tcp"},
		Description: "trafficmap operator: resolves sniffer reports to workloads, keeps ObservedTraffic",
	},
	{
		Name:    "trafficmap-sniffer",
		Binary:  muslRelease + "trafficmap-sniffer",
		Version: workspace,
		// Root: the capabilities the DaemonSet adds (NET_RAW, NET_ADMIN, SYS_ADMIN, SYS_PTRACE;
		// everything else dropped) only take effect for root. It is not privileged, and its
		// root filesystem is read-only.
		User:        "0:0",
		Ports:       []string{"9090/tcp"},
		Description: "trafficmap sniffer: DNS answers and open sockets of every pod on its node",
	},
	{
		Name:    "trafficmap-play",
		Binary:  muslRelease + "trafficmap-play",
		Version: workspace,
		// Root: scenario workloads listen on ports below 1024 (80), on any runtime and with
		// whatever capabilities the pod is left.
		User:        "0:0",
		Description: "plays a scenario workload's calls, as client and as server",
	},
	{
		Name:        "pause",
		Binary:      "target/images/bin/pause",
		Version:     kubernetes,
		User:        "65535:65535", // as upstream's pause image
		Description: "the Kubernetes pod sandbox (build/pause/linux/pause.c of k8s.io/kubernetes)",
	},
	{
		Name:         "coredns",
		Binary:       "target/images/bin/coredns",
		Version:      coreDNS,
		User:         "65532:65532", // as upstream's image: non-root, port 53 by file capability
		Ports:        []string{"53/tcp", "53/udp"},
		BindLowPorts: true,
		Description:  "CoreDNS with the plugins of e2e/coredns (kubernetes, forward, cache, ...)",
	},
}
