package main

// `controlplane up --dir DIR`: the foreground supervisor. It makes the PKI,
// runs etcd in-process, re-executes itself as kube-apiserver and
// kube-controller-manager children, writes DIR/kubeconfig, DIR/ca.crt and
// DIR/state.json, and DIR/ready once both components are healthy. SIGTERM or
// SIGINT stops everything and exits 0; an unexpected child exit stops the
// rest and exits 1.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// readyTimeout bounds how long the components may take to become healthy.
const readyTimeout = 170 * time.Second

// state is DIR/state.json, for tools that need more than the kubeconfig.
type state struct {
	APIServer         string `json:"apiserver"`
	Etcd              string `json:"etcd"`
	ControllerManager string `json:"controllerManager"`
	Scheduler         string `json:"scheduler"`
	Kubeconfig        string `json:"kubeconfig"`
	CA                string `json:"ca"`
	ServiceCIDR       string `json:"serviceCIDR"`
	SAIssuer          string `json:"serviceAccountIssuer"`
	PID               int    `json:"pid"`
}

// child is one running component.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status, valid after done
	// replaced is set before the supervisor kills it on purpose (restart-apiserver), so its
	// exit is expected.
	replaced bool
}

func runUp(args []string) int {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory (created if missing)")
	_ = fs.Parse(args)
	log.SetPrefix("controlplane: ")
	if *dir == "" {
		log.Print("--dir is required")
		return 2
	}
	if err := up(*dir); err != nil {
		log.Print(err)
		return 1
	}
	return 0
}

func up(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	readyFile := filepath.Join(dir, "ready")
	_ = os.Remove(readyFile)
	defer os.Remove(readyFile) // runs last: no stale ready once stopped
	// Children are forked from this locked thread, which lives as long as the
	// process: Pdeathsig fires when the forking thread exits.
	runtime.LockOSThread()
	// Catch signals before anything starts, so nothing is left behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	// SIGUSR1: kill the kube-apiserver as a crash would and start it again on the same port
	// with the same etcd (chaos tests: watches must resume).
	restarts := make(chan os.Signal, 1)
	signal.Notify(restarts, syscall.SIGUSR1)

	p, err := ensurePKI(dir)
	if err != nil {
		return err
	}
	pp, err := freePorts(5)
	if err != nil {
		return err
	}
	pt := ports{etcdClient: pp[0], etcdPeer: pp[1], apiserver: pp[2], kcm: pp[3], scheduler: pp[4]}
	st := state{
		APIServer:         fmt.Sprintf("https://%s:%d", apiserverIP, pt.apiserver),
		Etcd:              fmt.Sprintf("http://127.0.0.1:%d", pt.etcdClient),
		ControllerManager: fmt.Sprintf("https://127.0.0.1:%d", pt.kcm),
		Scheduler:         fmt.Sprintf("https://127.0.0.1:%d", pt.scheduler),
		Kubeconfig:        filepath.Join(dir, "kubeconfig"),
		CA:                p.ca.certFile,
		ServiceCIDR:       serviceCIDR,
		SAIssuer:          saIssuer,
		PID:               os.Getpid(),
	}
	if err := writeKubeconfig(st.Kubeconfig, st.APIServer, "admin", p.ca, p.admin); err != nil {
		return err
	}
	if err := writeKubeconfig(filepath.Join(dir, "controller-manager.kubeconfig"), st.APIServer,
		"system:kube-controller-manager", p.ca, p.controllerManager); err != nil {
		return err
	}
	if err := writeKubeconfig(filepath.Join(dir, "scheduler.kubeconfig"), st.APIServer,
		"system:kube-scheduler", p.ca, p.scheduler); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(st, "", "  ")
	if err := writeFileAtomic(filepath.Join(dir, "state.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}

	start := time.Now()
	etcd, err := startEtcd(dir, pt)
	if err != nil {
		return err
	}
	defer etcd.Close()
	log.Printf("etcd ready at %s (%s)", st.Etcd, time.Since(start).Round(time.Millisecond))

	var children []*child
	defer func() { stopAll(children) }()
	exited := make(chan *child, 3)
	spawn := func(name string, args []string) error {
		c, err := startChild(dir, name, args, exited)
		if err == nil {
			children = append(children, c)
		}
		return err
	}

	// Bring-up runs in the background so signals and crashes are handled
	// while waiting for health.
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	pr, err := newProber(p)
	if err != nil {
		return err
	}
	if err := spawn("kube-apiserver", apiserverArgs(dir, p, pt)); err != nil {
		return err
	}
	api := children[0]
	readyErr := make(chan error, 1)
	go func() {
		if err := pr.waitOK(ctx, api.done, st.APIServer+"/readyz"); err != nil {
			readyErr <- err
			return
		}
		log.Printf("kube-apiserver ready at %s (%s)", st.APIServer, time.Since(start).Round(time.Millisecond))
		readyErr <- nil
	}()

	var kcm *child
	for {
		select {
		case s := <-sigs:
			log.Printf("%s: stopping", s)
			return nil
		case c := <-exited:
			if c.replaced {
				continue
			}
			return fmt.Errorf("%s exited unexpectedly (%v); see %s", c.name, c.err, logPath(dir, c.name))
		case <-restarts:
			if kcm == nil {
				log.Print("SIGUSR1 before the control plane is ready: ignored")
				continue
			}
			_ = os.Remove(readyFile)
			log.Print("SIGUSR1: killing kube-apiserver and starting it again (etcd keeps its data)")
			api.replaced = true
			_ = api.cmd.Process.Kill()
			<-api.done
			next, err := startChild(dir, "kube-apiserver", apiserverArgs(dir, p, pt), exited)
			if err != nil {
				return err
			}
			for i, c := range children {
				if c == api {
					children[i] = next
				}
			}
			api = next
			again, cancelAgain := context.WithTimeout(context.Background(), readyTimeout)
			go func() {
				defer cancelAgain()
				readyErr <- pr.waitOK(again, next.done, st.APIServer+"/readyz")
			}()
		case err := <-etcd.Err():
			return fmt.Errorf("etcd failed: %w", err)
		case err := <-readyErr:
			if err != nil {
				return fmt.Errorf("not healthy (limit %s): %w", readyTimeout, err)
			}
			if kcm == nil { // apiserver is ready: start the controller-manager
				if err := spawn("kube-controller-manager", kcmArgs(dir, p, pt)); err != nil {
					return err
				}
				kcm = children[len(children)-1]
				if err := spawn("kube-scheduler", schedulerArgs(dir, p, pt)); err != nil {
					return err
				}
				sched := children[len(children)-1]
				go func() {
					if err := pr.waitOK(ctx, kcm.done, st.ControllerManager+"/healthz",
						// its controllers run: the serviceaccount controller made this
						st.APIServer+"/api/v1/namespaces/default/serviceaccounts/default"); err != nil {
						readyErr <- err
						return
					}
					log.Printf("kube-controller-manager healthy at %s (%s)", st.ControllerManager, time.Since(start).Round(time.Millisecond))
					if err := pr.waitOK(ctx, sched.done, st.Scheduler+"/healthz"); err != nil {
						readyErr <- err
						return
					}
					log.Printf("kube-scheduler healthy at %s (%s)", st.Scheduler, time.Since(start).Round(time.Millisecond))
					readyErr <- nil
				}()
				continue
			}
			// All healthy: tell the world.
			if err := writeFileAtomic(readyFile, []byte(st.APIServer+"\n"), 0o644); err != nil {
				return err
			}
			cancel()
			log.Printf("ready: KUBECONFIG=%s (%s)", st.Kubeconfig, time.Since(start).Round(time.Millisecond))
		}
	}
}

// startEtcd runs a single-member etcd on loopback with its data in DIR/etcd.
// fsync is off: this is throw-away test data and it makes the API much faster.
func startEtcd(dir string, pt ports) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "controlplane"
	cfg.Dir = filepath.Join(dir, "etcd")
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", pt.etcdClient)}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", pt.etcdPeer)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("etcd not ready within 60s")
	}
}

func logPath(dir, name string) string {
	return filepath.Join(dir, map[string]string{
		"kube-apiserver":          "apiserver.log",
		"kube-controller-manager": "controller-manager.log",
		"kube-scheduler":          "scheduler.log",
	}[name])
}

// startChild re-executes this binary as `controlplane NAME ARGS...` with its
// output in DIR's log file. Pdeathsig makes the kernel kill the child if the
// supervisor dies, however it dies. It is SIGKILL, not SIGTERM: etcd dies with
// the supervisor, and a SIGTERMed kube-apiserver then hangs in its graceful
// shutdown (it retries etcd). Normal stops use SIGTERM (see stopAll).
func startChild(dir, name string, args []string, exited chan<- *child) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	out, err := os.OpenFile(logPath(dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child keeps its own copy
	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	log.Printf("started %s (pid %d), log %s", name, cmd.Process.Pid, logPath(dir, name))
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
		select {
		case exited <- c: // only read while running; ignored during shutdown
		default:
		}
	}()
	return c, nil
}

// stopAll sends SIGTERM to every child, newest first, and SIGKILLs any that
// is still running after 10 s.
func stopAll(children []*child) {
	for i := len(children) - 1; i >= 0; i-- {
		c := children[i]
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			log.Printf("%s did not stop, killing it", c.name)
			_ = c.cmd.Process.Kill()
			<-c.done
		}
		log.Printf("%s stopped", c.name)
	}
}
