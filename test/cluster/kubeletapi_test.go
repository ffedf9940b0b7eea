package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStampedLog: output written in pieces is stamped once per line, and
// readStampedLog keeps the lines stamped at or after its since.
func TestStampedLog(t *testing.T) {
	dir := t.TempDir()
	plainPath, stampedPath := filepath.Join(dir, "plain"), filepath.Join(dir, "stamped")
	plain, _ := os.Create(plainPath)
	stamped, _ := os.Create(stampedPath)
	w := &stampWriter{plain: plain, stamped: stamped}
	for _, piece := range []string{"one\ntw", "o\n", "three\nfour"} {
		if _, err := w.Write([]byte(piece)); err != nil {
			t.Fatal(err)
		}
	}
	plain.Close()
	stamped.Close()
	if b, _ := os.ReadFile(plainPath); string(b) != "one\ntwo\nthree\nfour" {
		t.Errorf("plain log %q", b)
	}
	lines, err := readStampedLog(stampedPath, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, l := range lines {
		texts = append(texts, l.text)
	}
	if strings.Join(texts, "|") != "one|two|three|four" {
		t.Errorf("stamped lines %q", texts)
	}

	// Lines with chosen stamps, to check the filter without the clock.
	base := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	var b strings.Builder
	for i, text := range []string{"early", "at", "late"} {
		b.WriteString(base.Add(time.Duration(i-1) * time.Second).Format(time.RFC3339Nano))
		b.WriteString(" " + text + "\n")
	}
	b.WriteString("not stamped\n")
	if err := os.WriteFile(stampedPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	lines, err = readStampedLog(stampedPath, base)
	if err != nil || len(lines) != 2 || lines[0].text != "at" || lines[1].text != "late" {
		t.Errorf("since %v: %+v %v, want the lines at and after it", base, lines, err)
	}
	if lines, err := readStampedLog(filepath.Join(dir, "missing"), base); err != nil || lines != nil {
		t.Errorf("a pod that never wrote: %v %v, want no lines and no error", lines, err)
	}
}

// TestStampedProcessesKeepTheirLines: a process that ends mid-line and the
// next one in the same log each keep a line of their own.
func TestStampedProcessesKeepTheirLines(t *testing.T) {
	dir := t.TempDir()
	plain, stamped := filepath.Join(dir, "plain"), filepath.Join(dir, "stamped")
	for _, word := range []string{"first", "second"} {
		p, err := startStampedProcess(word, plain, stamped, nil, false, "sh", "-c", "printf "+word)
		if err != nil {
			t.Fatal(err)
		}
		<-p.done
	}
	lines, err := readStampedLog(stamped, time.Time{})
	if err != nil || len(lines) != 2 || lines[0].text != "first" || lines[1].text != "second" {
		t.Errorf("lines %+v %v, want first and second apart", lines, err)
	}
}
