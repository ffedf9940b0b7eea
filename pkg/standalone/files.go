package standalone

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/weir-dev/weir/pkg/manifest"
)

// A file is loaded only once it has been left alone for settleTime, so a
// file caught halfway through an in-place save (often a valid but truncated
// YAML stream) is not served; a later look picks it up. An empty file is
// most likely a save stalled between truncate and write, so it waits
// longer. Scripts should still replace files by rename.
const (
	settleTime      = 100 * time.Millisecond
	emptySettleTime = time.Second
)

// file is what the loop knows of one input file.
type file struct {
	// size and modTime are of the content last read to the end: a look
	// that finds them unchanged does not read the file again.
	size    int64
	modTime time.Time
	sum     [sha256.Size]byte
	// loaded is whether docs came from a successful read.
	loaded bool
	docs   int
	// kinds counts the loaded documents by kind; skipped says what of them
	// is not served and why (another class, a duplicate, invalid).
	kinds   map[string]int
	skipped []string
	err     error // the current content's error, if any; the last good content keeps serving
}

// loop follows the files: file system events wake it at once, and a poll
// every PollInterval catches what events miss (network file systems, a
// watch that could not be set up).
func (g *Gateway) loop(ctx context.Context) {
	defer close(g.done)
	events := g.watch(ctx)
	t := time.NewTicker(g.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.wake:
		case <-events:
		}
		g.scan(ctx, false)
	}
}

// watch sets up fsnotify on every configured path's directory and returns
// a channel that receives on every event. Without it the poll still works.
func (g *Gateway) watch(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		g.log.Warnw("Cannot watch the input files; polling them instead", "interval", g.opts.PollInterval, zap.Error(err))
		return out
	}
	for _, p := range g.opts.Paths {
		dir := p
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			dir = filepath.Dir(p)
		}
		if err := w.Add(dir); err != nil {
			g.log.Warnw("Cannot watch a directory; polling it instead", "dir", dir, "interval", g.opts.PollInterval, zap.Error(err))
		}
	}
	go func() {
		defer w.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-w.Events:
				if !ok {
					return
				}
				select {
				case out <- struct{}{}:
				default:
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				g.log.Warnw("File watch error; the poll goes on", zap.Error(err))
			}
		}
	}()
	return out
}

// scan looks at every input file and loads those that changed and have
// settled; at start (initial) it loads whatever is there. A file that is
// not settled yet wakes the loop again once it may be.
func (g *Gateway) scan(ctx context.Context, initial bool) {
	names, err := manifest.Files(g.opts.Paths...)
	if err != nil {
		g.log.Errorw("Cannot list the input files; keeping the current config", zap.Error(err))
		return
	}
	seen := make(map[string]bool, len(names))
	retry := false
	for _, n := range names {
		seen[n] = true
		if !g.look(ctx, n, initial) {
			retry = true
		}
	}
	g.mu.Lock()
	var gone []string
	for n := range g.files {
		if !seen[n] {
			gone = append(gone, n)
			delete(g.files, n)
		}
	}
	g.mu.Unlock()
	sort.Strings(gone)
	for _, n := range gone {
		delete(g.emptySince, n)
		g.log.Infow("File removed; dropping what it defined", "file", n)
		g.ctrl.Changed(g.store.RemoveFile(n))
	}
	if retry {
		time.AfterFunc(settleTime, func() {
			select {
			case g.wake <- struct{}{}:
			default:
			}
		})
	}
}

// look loads file n if it changed since it was last read. It returns
// false if the file changed but has not settled yet.
func (g *Gateway) look(ctx context.Context, n string, initial bool) bool {
	g.mu.Lock()
	f := g.files[n]
	g.mu.Unlock()
	before, err := os.Stat(n)
	if err != nil {
		g.fileError(n, f, err)
		return true
	}
	if f != nil && f.size == before.Size() && f.modTime.Equal(before.ModTime()) {
		return true
	}
	data, settled, err := g.read(n, before)
	if err != nil {
		g.fileError(n, f, err)
		return true
	}
	if !settled && !initial {
		return false
	}
	sum := sha256.Sum256(data)
	if f != nil && f.sum == sum && f.loaded {
		g.mu.Lock()
		f.size, f.modTime = before.Size(), before.ModTime()
		g.mu.Unlock()
		return true
	}
	next := &file{size: before.Size(), modTime: before.ModTime(), sum: sum}
	docs, err := manifest.Decode(n, data)
	for _, d := range docs {
		_, aerr := manifest.Admit(ctx, d)
		err = errors.Join(err, aerr)
	}
	if err != nil {
		// The last good content keeps serving.
		if f != nil {
			next.loaded, next.docs, next.kinds, next.skipped = f.loaded, f.docs, f.kinds, f.skipped
		}
		next.err = err
		g.mu.Lock()
		g.files[n] = next
		g.mu.Unlock()
		g.log.Errorf("Invalid input; the last good version of %s keeps serving:\n%v", n, err)
		return true
	}
	next.loaded, next.docs, next.kinds = true, len(docs), map[string]int{}
	for _, d := range docs {
		next.kinds[manifest.KindOf(d.Object)]++
	}
	changes, warnings, errs := g.store.SetFile(ctx, n, docs)
	for _, w := range warnings {
		g.log.Warn(w)
		next.skipped = append(next.skipped, w)
	}
	for _, err := range errs {
		g.log.Errorw("Document left out", zap.Error(err))
		next.skipped = append(next.skipped, err.Error())
	}
	g.mu.Lock()
	g.files[n] = next
	g.mu.Unlock()
	if !initial { // at start, ReconcileAll reconciles everything
		g.ctrl.Changed(changes)
	}
	g.log.Infow("Loaded", "file", n, "documents", len(docs), "changed", len(changes))
	return true
}

// read reads n and reports whether it has settled: unchanged while read,
// last modified at least settleTime ago, and if empty, read empty for
// emptySettleTime.
func (g *Gateway) read(n string, before os.FileInfo) ([]byte, bool, error) {
	data, err := os.ReadFile(n)
	if err != nil {
		return nil, false, err
	}
	settled := true
	after, err := os.Stat(n)
	if err != nil || !after.ModTime().Equal(before.ModTime()) || after.Size() != int64(len(data)) {
		settled = false
	} else if age := time.Since(after.ModTime()); age >= 0 && age < settleTime {
		settled = false
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if g.emptySince == nil {
			g.emptySince = map[string]time.Time{}
		}
		first, seen := g.emptySince[n]
		if !seen {
			first = time.Now()
			g.emptySince[n] = first
		}
		if time.Since(first) < emptySettleTime {
			settled = false
		}
	} else {
		delete(g.emptySince, n)
	}
	return data, settled, nil
}

func (g *Gateway) fileError(n string, f *file, err error) {
	if f == nil || f.err == nil || f.err.Error() != err.Error() {
		g.log.Errorw("Cannot read file; keeping its last good version", "file", n, zap.Error(err))
	}
	g.mu.Lock()
	if f == nil {
		f = &file{}
		g.files[n] = f
	}
	f.err = err
	g.mu.Unlock()
}
