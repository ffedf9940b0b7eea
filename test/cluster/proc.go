package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// process is one child process, started in its own process group so that
// stopping it also stops anything it forked.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // valid after done is closed
}

// startProcess runs argv with its output in logPath. env is added to the
// harness' own environment unless replaceEnv is set.
func startProcess(name, logPath string, env []string, replaceEnv bool, argv ...string) (*process, error) {
	return startStampedProcess(name, logPath, "", env, replaceEnv, argv...)
}

// startStampedProcess is startProcess that also keeps, unless stampedPath
// is "", each line of output with the time it began (see stampWriter).
func startStampedProcess(name, logPath, stampedPath string, env []string, replaceEnv bool, argv ...string) (*process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	closeLogs := func() { _ = f.Close() }
	if stampedPath == "" {
		defer closeLogs() // the child has its own descriptor
		cmd.Stdout, cmd.Stderr = f, f
	} else {
		sf, err := os.OpenFile(stampedPath, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
		if err != nil {
			_ = f.Close()
			return nil, err
		}
		// A process that died mid-line does not glue its last line to the
		// next one's first.
		if st, err := sf.Stat(); err == nil && st.Size() > 0 {
			last := make([]byte, 1)
			if _, err := sf.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
				_, _ = sf.Write([]byte("\n"))
			}
		}
		closeLogs = func() { _ = f.Close(); _ = sf.Close() }
		w := &stampWriter{plain: f, stamped: sf}
		cmd.Stdout, cmd.Stderr = w, w
		// A forked child that keeps the output pipe must not hold up Wait.
		cmd.WaitDelay = time.Second
	}
	if replaceEnv {
		cmd.Env = env
	} else {
		cmd.Env = append(os.Environ(), env...)
	}
	// Pdeathsig: a harness killed by go test's timeout must not leave a
	// control plane behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		if stampedPath != "" {
			closeLogs()
		}
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if stampedPath != "" {
			closeLogs()
		}
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Children that ignored SIGTERM and outlived the leader.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// exitError describes how the process ended, with the end of its log.
func (p *process) exitError() error {
	msg := "exited"
	if p.err != nil {
		msg = p.err.Error()
	}
	return fmt.Errorf("%s %s; last lines of %s:\n%s", p.name, msg, p.log, tail(p.log, 20))
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run runs a short command and returns a readable error with its output.
func run(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// repoRoot finds the weir module root above the working directory, so the
// harness works from tests (cwd = package dir) and from the repo root.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/weir-dev/weir\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the github.com/weir-dev/weir module above the working directory")
		}
		dir = parent
	}
}
