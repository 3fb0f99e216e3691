package main

// Flags of the two Kubernetes components, the kubeconfigs they and the user
// get, and the health probes the supervisor uses.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	// apiserverIP is where the kube-apiserver listens and what it advertises: the address of
	// the `default/kubernetes` Endpoints, as in a real cluster. A loopback address is not a valid
	// endpoint, so controlplane.sh puts this one on a link of its own (tm-apiserver).
	apiserverIP    = "10.255.255.1"
	serviceCIDR    = "10.96.0.0/16"
	firstServiceIP = "10.96.0.1"
	saIssuer       = "https://kubernetes.default.svc.cluster.local"
)

// kcmControllers are the controllers the controller-manager runs (canonical
// 1.36 names, see `controlplane kube-controller-manager --help`): what the
// cluster needs for workloads, services, namespaces, nodes and RBAC.
var kcmControllers = []string{
	"garbage-collector-controller",
	"deployment-controller",
	"replicaset-controller",
	"statefulset-controller",
	"daemonset-controller",
	"job-controller",
	"cronjob-controller",
	"endpointslice-controller",
	"endpoints-controller",
	"pod-garbage-collector-controller", // force-deletes pods bound to deleted (fake) Nodes
	// Lifts the not-ready taint a kubelet registers with once its node is Ready (the real node).
	"node-lifecycle-controller",
	"serviceaccount-controller",
	"namespace-controller",
	"root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller",
}

// ports are the ports picked for one run (the apiserver's on apiserverIP, the rest on loopback).
type ports struct{ etcdClient, etcdPeer, apiserver, kcm, scheduler int }

// freePorts asks the kernel for n distinct free ports on 127.0.0.1 by holding
// n listeners on :0 at once, then closing them for the components to reuse.
func freePorts(n int) ([]int, error) {
	out := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// apiserverArgs are the kube-apiserver flags.
func apiserverArgs(dir string, p *pki, pt ports) []string {
	return []string{
		"--bind-address=" + apiserverIP,
		fmt.Sprintf("--secure-port=%d", pt.apiserver),
		// The lease endpoint reconciler (the default) keeps the `default/kubernetes`
		// Endpoints and EndpointSlice pointing here.
		"--advertise-address=" + apiserverIP,
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", pt.etcdClient),
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--client-ca-file=" + p.ca.certFile,
		"--tls-cert-file=" + p.apiserver.certFile,
		"--tls-private-key-file=" + p.apiserver.keyFile,
		// Kubelets are authorized as in kubeadm clusters: the Node authorizer and
		// NodeRestriction limit each to its own node and pods.
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		// Logs, exec and port-forward through the kubelet's API, at the node's address.
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-client-certificate=" + p.kubeletClient.certFile,
		"--kubelet-client-key=" + p.kubeletClient.keyFile,
		// TokenRequest / TokenReview: the issuer, the signing key and the
		// verifying key; tokens without an explicit audience get this one.
		"--service-account-issuer=" + saIssuer,
		"--service-account-signing-key-file=" + p.saKeyFile,
		"--service-account-key-file=" + p.saPubFile,
		"--api-audiences=" + saIssuer,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--allow-privileged=true",
		// Front proxy (aggregation layer): lets extension apiservers and the
		// controller-manager's delegated authentication trust proxied users.
		"--requestheader-client-ca-file=" + p.frontProxyCA.certFile,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + p.frontProxyClient.certFile,
		"--proxy-client-key-file=" + p.frontProxyClient.keyFile,
		"--profiling=false",
	}
}

// kcmArgs are the kube-controller-manager flags.
func kcmArgs(dir string, p *pki, pt ports) []string {
	kc := filepath.Join(dir, "controller-manager.kubeconfig")
	return []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--leader-elect=false",
		"--controllers=" + strings.Join(kcmControllers, ","),
		// Each controller gets its own service account (and RBAC role), as in
		// kubeadm clusters; the CM's own user may only mint their tokens.
		"--use-service-account-credentials=true",
		"--root-ca-file=" + p.ca.certFile,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", pt.kcm),
		// Serve /healthz with the apiserver's loopback certificate, so the
		// supervisor can verify it against the CA.
		"--tls-cert-file=" + p.apiserver.certFile,
		"--tls-private-key-file=" + p.apiserver.keyFile,
		"--profiling=false",
	}
}

// schedulerArgs are the kube-scheduler flags.
func schedulerArgs(dir string, p *pki, pt ports) []string {
	kc := filepath.Join(dir, "scheduler.kubeconfig")
	return []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", pt.scheduler),
		"--tls-cert-file=" + p.apiserver.certFile,
		"--tls-private-key-file=" + p.apiserver.keyFile,
		"--profiling=false",
	}
}

// writeKubeconfig writes a kubeconfig for the client pair kp, with the CA,
// the certificate and the key embedded.
func writeKubeconfig(path, server, user string, ca, kp *keyPair) error {
	caPEM, err := os.ReadFile(ca.certFile)
	if err != nil {
		return err
	}
	certPEM, err := os.ReadFile(kp.certFile)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(kp.keyFile)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["trafficmap-e2e"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["trafficmap-e2e"] = &clientcmdapi.Context{Cluster: "trafficmap-e2e", AuthInfo: user}
	cfg.CurrentContext = "trafficmap-e2e"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data, 0o600)
}

// prober does HTTPS GETs that trust only our CA, with the admin identity.
type prober struct{ client *http.Client }

func newProber(p *pki) (*prober, error) {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.cert)
	pair, err := tls.LoadX509KeyPair(p.admin.certFile, p.admin.keyFile)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}
	return &prober{client: &http.Client{Transport: tr, Timeout: 3 * time.Second}}, nil
}

// ok reports whether url answers 200, with body "ok" for health endpoints
// (paths ending in "z": /readyz, /healthz).
func (pr *prober) ok(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := pr.client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	health := strings.HasSuffix(url, "z")
	return resp.StatusCode == http.StatusOK && (!health || strings.TrimSpace(string(body)) == "ok")
}

// waitOK polls the URLs in turn until each is ok; it fails when ctx ends or
// dead is closed (the component exited).
func (pr *prober) waitOK(ctx context.Context, dead <-chan struct{}, urls ...string) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for len(urls) > 0 {
		url := urls[0]
		if pr.ok(ctx, url) {
			urls = urls[1:]
			continue
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", url, ctx.Err())
		case <-dead:
			return fmt.Errorf("%s: process exited", url)
		case <-t.C:
		}
	}
	return nil
}
