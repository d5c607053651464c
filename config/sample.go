package config

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// WriteSample writes the documented sample configuration: every section and
// option with its help text and, commented out, its default. The checked-in
// etc/shareless.conf.sample is this output; a test keeps the two equal.
func WriteSample(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "# shareless agent configuration, /etc/shareless/shareless.conf.")
	fmt.Fprintln(bw, "#")
	fmt.Fprintln(bw, "# Generated from the struct tags in config/config.go (go test ./config -update).")
	fmt.Fprintln(bw, "# Every option is shown commented out, set to its default. Unknown sections and")
	fmt.Fprintln(bw, "# options are errors. Durations: 30s, 2m, 500ms, or a bare number of seconds.")
	fmt.Fprintln(bw, "# Sizes: 65536, 64KiB, 4MiB, 1GiB. Lists: comma separated. Files named by *_file")
	fmt.Fprintln(bw, "# options hold one secret; a trailing newline is ignored.")
	for _, s := range schema() {
		fmt.Fprintf(bw, "\n[%s]\n", s.name)
		comment(bw, s.help)
		if s.options == nil {
			fmt.Fprintln(bw, "#")
			fmt.Fprintln(bw, "# Example:")
			fmt.Fprintln(bw, "#compute2 = 192.0.2.12:3270")
			continue
		}
		for _, o := range s.options {
			fmt.Fprintln(bw)
			comment(bw, o.help)
			fmt.Fprintln(bw, strings.TrimRight("#"+o.name+" = "+o.def, " "))
		}
	}
	return bw.Flush()
}

func comment(w io.Writer, text string) {
	for _, line := range strings.Split(text, "\n") {
		fmt.Fprintf(w, "# %s\n", line)
	}
}
