package main

// `controlplane node-credentials`: a kubelet's identity, as a kubeadm join
// would give it (user system:node:NAME in group system:nodes, which the Node
// authorizer and NodeRestriction admit), signed by the running control plane's CA.

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
)

func runNodeCredentials(args []string) int {
	fs := flag.NewFlagSet("node-credentials", flag.ExitOnError)
	dir := fs.String("dir", "", "the control plane's state directory")
	node := fs.String("node", "", "node name")
	out := fs.String("out", "", "kubeconfig to write")
	_ = fs.Parse(args)
	log.SetPrefix("controlplane node-credentials: ")
	if *dir == "" || *node == "" || *out == "" {
		log.Print("--dir, --node and --out are required")
		return 2
	}
	if err := nodeCredentials(*dir, *node, *out); err != nil {
		log.Print(err)
		return 1
	}
	return 0
}

func nodeCredentials(dir, node, out string) error {
	var st state
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return fmt.Errorf("is the control plane up? %w", err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "state.json"), err)
	}
	ca, err := readKeyPair(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		return err
	}
	user := "system:node:" + node
	cert, key, err := newCert(&x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: []string{"system:nodes"}},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca.cert, ca.key)
	if err != nil {
		return err
	}
	stem := filepath.Join(filepath.Dir(out), "node-"+node)
	kp := &keyPair{cert: cert, key: key, certFile: stem + ".crt", keyFile: stem + ".key"}
	if err := writePair(kp); err != nil {
		return err
	}
	return writeKubeconfig(out, st.APIServer, user, ca, kp)
}
