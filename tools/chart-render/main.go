// chart-render: `helm template` for machines without helm (tests/deploy renders the xlstmd
// chart with it). Usage:
//
//	chart-render [--release NAME] [--namespace NS] [--kube-version V] [--api-versions G/V]...
//	             [-f VALUES.yaml]... [--notes] CHART_DIR
//
// Prints the manifests (or, with --notes, the rendered NOTES.txt) on stdout. Exit 1 with
// "Error: ..." on stderr when the chart fails to render (schema, fail, required, YAML), 2 on
// bad usage.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var opt Options
	var values, apis listFlag
	notes := false
	fs := flag.NewFlagSet("chart-render", flag.ContinueOnError)
	fs.Var(&values, "f", "values file (repeatable; later files win)")
	fs.Var(&values, "values", "same as -f")
	fs.StringVar(&opt.ReleaseName, "release", "", "release name (default: the chart's name)")
	fs.StringVar(&opt.Namespace, "namespace", "default", "release namespace")
	fs.StringVar(&opt.KubeVersion, "kube-version", "1.29.0", "Kubernetes version for .Capabilities and kubeVersion")
	fs.Var(&apis, "api-versions", "extra API group/version for .Capabilities.APIVersions (repeatable)")
	fs.BoolVar(&notes, "notes", false, "print the rendered NOTES.txt instead of the manifests")
	// Flags may follow the chart directory, as with helm.
	var args []string
	rest := os.Args[1:]
	for len(rest) > 0 {
		if err := fs.Parse(rest); err != nil {
			os.Exit(2)
		}
		if fs.NArg() == 0 {
			break
		}
		args = append(args, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: chart-render [flags] CHART_DIR (exactly one chart)")
		os.Exit(2)
	}
	opt.ValueFiles = values
	opt.APIVersions = apis
	chart, err := LoadChart(args[0])
	if err == nil {
		var res *Result
		if res, err = Render(chart, opt); err == nil {
			if notes {
				fmt.Print(res.Notes)
			} else {
				fmt.Print(res.Manifests)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "Error: %v\n", err)
	os.Exit(1)
}
