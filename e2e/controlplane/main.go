// Command controlplane runs a real, local Kubernetes control plane (embedded
// etcd, kube-apiserver, kube-controller-manager) built from the Kubernetes Go
// modules, for end-to-end tests, plus the node components (kubelet, kube-proxy)
// that the simulated and the real node (e2e/node) run.
//
// Subcommands:
//
//	controlplane up --dir DIR            foreground supervisor (see up.go)
//	controlplane kube-apiserver ARGS...  the real kube-apiserver (child process)
//	controlplane kube-controller-manager ARGS...
//	controlplane kube-scheduler ARGS...
//	controlplane kube-proxy ARGS...      the real kube-proxy, for either node
//	controlplane kubelet ARGS...         the real kubelet, for the real node
//	controlplane node-credentials --dir DIR --node NAME --out FILE
//	                                     a kubeconfig for system:node:NAME
//
// The components run as separate child processes of the supervisor: each
// registers flags, metrics and feature gates in process-global registries, so
// they cannot share one process.
package main

import (
	"context"
	"fmt"
	"os"
	_ "time/tzdata" // CronJob time zone support, as in the upstream binaries

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as upstream
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"
	schedulerapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"
)

const usage = `usage:
  controlplane up --dir DIR
  controlplane kube-apiserver [kube-apiserver flags]
  controlplane kube-controller-manager [kube-controller-manager flags]
  controlplane kube-scheduler [kube-scheduler flags]
  controlplane kube-proxy [kube-proxy flags]
  controlplane kubelet [kubelet flags]
  controlplane node-credentials --dir DIR --node NAME --out FILE
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "up":
		os.Exit(runUp(os.Args[2:]))
	case "kube-apiserver":
		os.Exit(runComponent(apiserverapp.NewAPIServerCommand(), os.Args[2:]))
	case "kube-controller-manager":
		os.Exit(runComponent(kcmapp.NewControllerManagerCommand(), os.Args[2:]))
	case "kube-scheduler":
		os.Exit(runComponent(schedulerapp.NewSchedulerCommand(), os.Args[2:]))
	case "kube-proxy":
		os.Exit(runComponent(proxyapp.NewProxyCommand(), os.Args[2:]))
	case "kubelet":
		os.Exit(runComponent(kubeletapp.NewKubeletCommand(context.Background()), os.Args[2:]))
	case "node-credentials":
		os.Exit(runNodeCredentials(os.Args[2:]))
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "unknown subcommand %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

// runComponent runs an upstream cobra command exactly like its own main()
// would, with args instead of os.Args[1:].
func runComponent(cmd *cobra.Command, args []string) int {
	cmd.SetArgs(args)
	return cli.Run(cmd)
}
