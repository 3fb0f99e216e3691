package main

// PKI for the local control plane, made with Go's crypto packages. Files are
// PEM in DIR; existing ones are reused, so a restart keeps the same CA and
// every kubeconfig handed out earlier stays valid.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// keyPair is a certificate with its private key, loaded or freshly made.
type keyPair struct {
	cert     *x509.Certificate
	key      crypto.Signer
	certFile string
	keyFile  string
}

// certSpec describes one leaf certificate signed by the CA.
type certSpec struct {
	name     string // file stem: NAME.crt / NAME.key
	cn       string
	orgs     []string
	usage    x509.ExtKeyUsage
	dnsNames []string
	ips      []net.IP
}

// pki holds every credential the components need.
type pki struct {
	ca, apiserver, admin, controllerManager, scheduler *keyPair
	// kubeletClient is the apiserver's identity towards kubelets (logs, exec).
	kubeletClient *keyPair
	// The front-proxy CA signs the client cert the apiserver's aggregator
	// presents to extension apiservers (kubeadm's layout).
	frontProxyCA, frontProxyClient *keyPair
	saKeyFile, saPubFile           string
}

// ensurePKI loads or creates the CA, the leaf certs and the service-account key.
func ensurePKI(dir string) (*pki, error) {
	ca, fresh, err := loadOrCreateCA(dir, "ca", "trafficmap-e2e-ca")
	if err != nil {
		return nil, err
	}
	fpCA, fpFresh, err := loadOrCreateCA(dir, "front-proxy-ca", "trafficmap-e2e-front-proxy-ca")
	if err != nil {
		return nil, err
	}
	leafOf := func(ca *keyPair, fresh bool, s certSpec) (*keyPair, error) {
		if fresh || !covers(filepath.Join(dir, s.name+".crt"), s.ips) {
			// a new CA invalidates every old leaf, and a new address an old serving cert
			_ = os.Remove(filepath.Join(dir, s.name+".crt"))
		}
		kp, _, err := loadOrCreate(dir, s.name, func() (*x509.Certificate, crypto.Signer, error) {
			return newCert(&x509.Certificate{
				Subject:     pkix.Name{CommonName: s.cn, Organization: s.orgs},
				KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
				ExtKeyUsage: []x509.ExtKeyUsage{s.usage},
				DNSNames:    s.dnsNames,
				IPAddresses: s.ips,
			}, ca.cert, ca.key)
		})
		return kp, err
	}
	leaf := func(s certSpec) (*keyPair, error) { return leafOf(ca, fresh, s) }
	p := &pki{ca: ca, frontProxyCA: fpCA}
	if p.frontProxyClient, err = leafOf(fpCA, fpFresh, certSpec{name: "front-proxy-client", cn: "front-proxy-client",
		usage: x509.ExtKeyUsageClientAuth}); err != nil {
		return nil, err
	}
	if p.apiserver, err = leaf(certSpec{
		name: "apiserver", cn: "kube-apiserver", usage: x509.ExtKeyUsageServerAuth,
		dnsNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		ips: []net.IP{net.ParseIP(apiserverIP), net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP(firstServiceIP)},
	}); err != nil {
		return nil, err
	}
	if p.admin, err = leaf(certSpec{name: "admin", cn: "admin", orgs: []string{"system:masters"},
		usage: x509.ExtKeyUsageClientAuth}); err != nil {
		return nil, err
	}
	if p.controllerManager, err = leaf(certSpec{name: "controller-manager", cn: "system:kube-controller-manager",
		usage: x509.ExtKeyUsageClientAuth}); err != nil {
		return nil, err
	}
	if p.scheduler, err = leaf(certSpec{name: "scheduler", cn: "system:kube-scheduler",
		usage: x509.ExtKeyUsageClientAuth}); err != nil {
		return nil, err
	}
	if p.kubeletClient, err = leaf(certSpec{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client",
		orgs: []string{"system:masters"}, usage: x509.ExtKeyUsageClientAuth}); err != nil {
		return nil, err
	}
	p.saKeyFile, p.saPubFile = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := ensureSAKey(p.saKeyFile, p.saPubFile); err != nil {
		return nil, err
	}
	return p, nil
}

// covers reports whether the certificate in file (if readable) names every IP in ips.
func covers(file string, ips []net.IP) bool {
	data, err := os.ReadFile(file)
	if err != nil {
		return true // nothing to invalidate
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return false
	}
	for _, ip := range ips {
		if cert.VerifyHostname(ip.String()) != nil {
			return false
		}
	}
	return true
}

// loadOrCreateCA returns the self-signed CA DIR/NAME.{crt,key}.
func loadOrCreateCA(dir, name, cn string) (*keyPair, bool, error) {
	return loadOrCreate(dir, name, func() (*x509.Certificate, crypto.Signer, error) {
		return newCert(&x509.Certificate{
			Subject:               pkix.Name{CommonName: cn},
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		}, nil, nil)
	})
}

// loadOrCreate returns DIR/NAME.{crt,key}, creating them with mk when either
// is missing or unreadable. fresh reports whether they were created.
func loadOrCreate(dir, name string, mk func() (*x509.Certificate, crypto.Signer, error)) (*keyPair, bool, error) {
	kp := &keyPair{certFile: filepath.Join(dir, name+".crt"), keyFile: filepath.Join(dir, name+".key")}
	if cert, key, err := readPair(kp.certFile, kp.keyFile); err == nil && time.Until(cert.NotAfter) > 24*time.Hour {
		kp.cert, kp.key = cert, key
		return kp, false, nil
	}
	cert, key, err := mk()
	if err != nil {
		return nil, false, fmt.Errorf("create %s: %w", name, err)
	}
	kp.cert, kp.key = cert, key
	if err := writePair(kp); err != nil {
		return nil, false, err
	}
	return kp, true, nil
}

// newCert signs tmpl with parent/parentKey (self-signed when parent is nil)
// using a new ECDSA P-256 key, valid for ten years.
func newCert(tmpl, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(10 * 365 * 24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// ensureSAKey makes the RSA key that signs and verifies service-account tokens.
func ensureSAKey(keyFile, pubFile string) error {
	if _, err := os.Stat(keyFile); err == nil {
		if _, err := os.Stat(pubFile); err == nil {
			return nil
		}
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(keyFile, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key), 0o600); err != nil {
		return err
	}
	return writePEM(pubFile, "PUBLIC KEY", pub, 0o644)
}

// writePair writes kp's key (0600) and certificate as PEM.
func writePair(kp *keyPair) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(kp.key)
	if err != nil {
		return err
	}
	if err := writePEM(kp.keyFile, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return err
	}
	return writePEM(kp.certFile, "CERTIFICATE", kp.cert.Raw, 0o644)
}

// readKeyPair loads an existing pair.
func readKeyPair(certFile, keyFile string) (*keyPair, error) {
	cert, key, err := readPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", certFile, err)
	}
	return &keyPair{cert: cert, key: key, certFile: certFile, keyFile: keyFile}, nil
}

// readPair parses a PEM certificate and its PKCS#8 private key.
func readPair(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("bad PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("key is not a signer")
	}
	return cert, signer, nil
}

// writePEM writes one PEM block atomically (temp file + rename).
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
