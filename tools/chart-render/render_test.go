package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeChart makes a chart directory from path -> content.
func writeChart(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if _, ok := files["Chart.yaml"]; !ok {
		files["Chart.yaml"] = "apiVersion: v2\nname: demo\nversion: 1.0.0\nappVersion: \"2.0\"\n"
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func render(t *testing.T, dir string, opt Options) (*Result, error) {
	t.Helper()
	c, err := LoadChart(dir)
	if err != nil {
		t.Fatal(err)
	}
	return Render(c, opt)
}

func valuesFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "v.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRender(t *testing.T, dir string, opt Options) string {
	t.Helper()
	r, err := render(t, dir, opt)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return r.Manifests
}

func TestValuesCoalesceLikeHelm(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"values.yaml": "a: {x: 1, y: 2}\nb: keep\nc: [1, 2]\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata:\n" +
			"  a: {{ toJson .Values.a | quote }}\n  b: {{ .Values.b | quote }}\n" +
			"  c: {{ toJson .Values.c | quote }}\n  hasy: {{ hasKey .Values.a \"y\" | quote }}\n",
	})
	// Later files win, maps merge, a null deletes the chart's default, lists replace.
	out := mustRender(t, dir, Options{ValueFiles: []string{
		valuesFile(t, "a: {x: 5}\nc: [3]\n"), valuesFile(t, "a: {y: null, z: 3}\n")}})
	for _, want := range []string{`a: "{\"x\":5,\"z\":3}"`, `b: "keep"`, `c: "[3]"`, `hasy: "false"`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
}

func TestSchemaErrorsNameTheKey(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"values.yaml": "gpu: {count: 1}\n",
		"values.schema.json": `{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
		  "additionalProperties": false, "properties": {"gpu": {"type": "object",
		  "additionalProperties": false, "properties": {"count": {"type": "integer", "minimum": 1}}}}}`,
		"templates/x.yaml": "",
	})
	for file, want := range map[string]string{
		"gpu: {count: 0}\n":          "- gpu.count: Must be greater than or equal to 1",
		"gpu: {count: two}\n":        "- gpu.count: Invalid type. Expected: integer, given: string",
		"gpu: {cuont: 1}\n":          "- gpu: Additional property cuont is not allowed",
		"replicas: 2\n":              "- (root): Additional property replicas is not allowed",
		"gpu: {count: 1.5}\n":        "gpu.count: Invalid type. Expected: integer, given: number",
		"gpu: {count: 4294967296}\n": "",
	} {
		_, err := render(t, dir, Options{ValueFiles: []string{valuesFile(t, file)}})
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", file, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) ||
			!strings.HasPrefix(err.Error(), "values don't meet the specifications") {
			t.Errorf("%s: got %v, want %q", file, err, want)
		}
	}
}

func TestFailAndRequiredReadLikeHelm(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"values.yaml":       "name: \"\"\nbad: false\n",
		"templates/_h.tpl":  "{{- define \"demo.check\" -}}{{- if .Values.bad -}}{{- fail \"bad is set\" -}}{{- end -}}{{- end -}}",
		"templates/cm.yaml": "{{- include \"demo.check\" . }}\nname: {{ required \"name is required\" .Values.name }}\n",
	})
	_, err := render(t, dir, Options{})
	if err == nil || err.Error() != "execution error at (demo/templates/cm.yaml:2:9): name is required" {
		t.Errorf("required: %v", err)
	}
	_, err = render(t, dir, Options{ValueFiles: []string{valuesFile(t, "name: x\nbad: true\n")}})
	if err == nil || !strings.HasPrefix(err.Error(), "execution error at (demo/templates/_h.tpl:1:") ||
		!strings.HasSuffix(err.Error(), "): bad is set") {
		t.Errorf("fail inside include: %v", err)
	}
}

func TestOutputOrderSourcesAndHooks(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"templates/_helpers.tpl":  "{{ define \"demo.name\" }}{{ .Chart.Name }}-{{ .Release.Name }}{{ end }}",
		"templates/a-deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: {{ include \"demo.name\" . }}}\n",
		"templates/b-svc.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: s1}\n---\n# only a comment\n---\n" +
			"apiVersion: v1\nkind: Service\nmetadata: {name: s2}\n",
		"templates/c-cm.yaml":     "\n\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
		"templates/d-widget.yaml": "apiVersion: x.io/v1\nkind: Widget\nmetadata: {name: w}\n",
		"templates/tests/t.yaml":  "apiVersion: v1\nkind: Pod\nmetadata:\n  name: t\n  annotations: {helm.sh/hook: test}\n",
		"templates/NOTES.txt":     "release {{ .Release.Name }} in {{ .Release.Namespace }}\n",
		"templates/empty.yaml":    "{{- if false }}\nkind: Secret\n{{- end }}\n",
	})
	r, err := render(t, dir, Options{ReleaseName: "r1", Namespace: "ns"})
	if err != nil {
		t.Fatal(err)
	}
	// Known kinds in helm's install order; then unknown kinds by name: the comment-only document
	// (kind "") before Widget; hooks last. Empty documents are dropped.
	want := "---\n# Source: demo/templates/c-cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n" +
		"---\n# Source: demo/templates/b-svc.yaml\napiVersion: v1\nkind: Service\nmetadata: {name: s1}\n" +
		"---\n# Source: demo/templates/b-svc.yaml\napiVersion: v1\nkind: Service\nmetadata: {name: s2}\n" +
		"---\n# Source: demo/templates/a-deploy.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: demo-r1}\n" +
		"---\n# Source: demo/templates/b-svc.yaml\n# only a comment\n" +
		"---\n# Source: demo/templates/d-widget.yaml\napiVersion: x.io/v1\nkind: Widget\nmetadata: {name: w}\n" +
		"---\n# Source: demo/templates/tests/t.yaml\napiVersion: v1\nkind: Pod\nmetadata:\n  name: t\n  annotations: {helm.sh/hook: test}\n"
	if r.Manifests != want {
		t.Errorf("got\n%s\nwant\n%s", r.Manifests, want)
	}
	if r.Notes != "release r1 in ns\n" {
		t.Errorf("notes %q", r.Notes)
	}
}

func TestHelmFunctions(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"values.yaml": "big: 4294967296\nobj: {b: 2, a: [x, z]}\ntext: \"{{ .Release.Name }}-suffix\"\n",
		"templates/cm.yaml": "kind: ConfigMap\ndata:\n" +
			"  raw: {{ .Values.big }}\n  int: {{ .Values.big | int64 }}\n" +
			"  yaml: |\n{{ toYaml .Values.obj | indent 4 }}\n" +
			"  tpl: {{ tpl .Values.text . }}\n" +
			"  from: {{ (fromYaml \"k: v\").k }}\n" +
			"  lookup: {{ len (lookup \"v1\" \"Secret\" \"ns\" \"s\") }}\n" +
			"  missing: [{{ .Values.nothing }}]\n" +
			"  kube: {{ .Capabilities.KubeVersion.Version }} {{ .Capabilities.APIVersions.Has \"apps/v1\" }} {{ .Capabilities.APIVersions.Has \"keda.sh/v1alpha1\" }}\n" +
			"  chart: {{ .Chart.Name }} {{ .Chart.AppVersion }} {{ .Template.Name }}\n",
	})
	out := mustRender(t, dir, Options{ReleaseName: "rel", KubeVersion: "1.28.3"})
	for _, want := range []string{
		"raw: 4.294967296e+09", "int: 4294967296", "yaml: |\n    a:\n    - x\n    - z\n    b: 2",
		"tpl: rel-suffix", "from: v", "lookup: 0", "missing: []",
		"kube: v1.28.3 true false", "chart: demo 2.0 demo/templates/cm.yaml",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	out = mustRender(t, dir, Options{APIVersions: []string{"keda.sh/v1alpha1"}})
	if !strings.Contains(out, "true true") {
		t.Errorf("--api-versions not seen:\n%s", out)
	}
}

func TestEnvironmentFunctionsAreNotAvailable(t *testing.T) {
	dir := writeChart(t, map[string]string{"templates/x.yaml": "home: {{ env \"HOME\" }}\n"})
	if _, err := render(t, dir, Options{}); err == nil || !strings.Contains(err.Error(), `function "env" not defined`) {
		t.Errorf("env: %v", err)
	}
}

func TestKubeVersionConstraint(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"Chart.yaml":       "apiVersion: v2\nname: demo\nversion: 1.0.0\nkubeVersion: \">=1.27.0-0\"\n",
		"templates/x.yaml": "",
	})
	if _, err := render(t, dir, Options{KubeVersion: "1.26.9"}); err == nil ||
		!strings.Contains(err.Error(), "incompatible with Kubernetes v1.26.9") {
		t.Errorf("old cluster: %v", err)
	}
	if _, err := render(t, dir, Options{KubeVersion: "v1.27.1"}); err != nil {
		t.Errorf("1.27: %v", err)
	}
}

func TestBrokenYAMLIsAnError(t *testing.T) {
	dir := writeChart(t, map[string]string{"templates/x.yaml": "kind: Service\nmetadata:\n  name: a\n name: b\n"})
	if _, err := render(t, dir, Options{}); err == nil || !strings.Contains(err.Error(), "YAML parse error on demo/templates/x.yaml") {
		t.Errorf("got %v", err)
	}
}
