// Helm 3's rendering semantics for one chart without subcharts: values coalescing, schema
// validation, the template function set, manifest splitting and Helm's install order.
// Built from Debian's Go packages (no helm binary exists on these machines); where helm is
// present, tests/deploy compares our output with `helm template`.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/semver/v3"
	"github.com/Masterminds/sprig/v3"
	"github.com/xeipuuv/gojsonschema"
	"sigs.k8s.io/yaml"
)

// Options are what `helm template` takes from its command line.
type Options struct {
	ValueFiles  []string // -f, later files win
	ReleaseName string
	Namespace   string
	KubeVersion string   // "1.29.0" or "v1.29.0"
	APIVersions []string // added to the built-in set, as helm's --api-versions
}

// Result is one rendering: manifests in helm's `template` output form, and NOTES.txt.
type Result struct {
	Manifests string
	Notes     string
}

// Chart is a chart directory read into memory.
type Chart struct {
	Meta      map[string]interface{} // Chart.yaml
	Values    map[string]interface{} // values.yaml
	Schema    []byte                 // values.schema.json, or nil
	Templates map[string]string      // "<chart>/templates/<path>" -> text
}

func readYAMLMap(file string) (map[string]interface{}, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	if m == nil {
		m = map[string]interface{}{}
	}
	return m, nil
}

// LoadChart reads Chart.yaml, values.yaml, values.schema.json and templates/.
func LoadChart(dir string) (*Chart, error) {
	meta, err := readYAMLMap(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return nil, fmt.Errorf("not a chart: %v", err)
	}
	name, _ := meta["name"].(string)
	if name == "" {
		return nil, fmt.Errorf("%s: name is required", filepath.Join(dir, "Chart.yaml"))
	}
	c := &Chart{Meta: meta, Values: map[string]interface{}{}, Templates: map[string]string{}}
	if _, err := os.Stat(filepath.Join(dir, "values.yaml")); err == nil {
		if c.Values, err = readYAMLMap(filepath.Join(dir, "values.yaml")); err != nil {
			return nil, err
		}
	}
	if data, err := os.ReadFile(filepath.Join(dir, "values.schema.json")); err == nil {
		c.Schema = data
	}
	root := filepath.Join(dir, "templates")
	err = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		c.Templates[path.Join(name, "templates", filepath.ToSlash(rel))] = string(data)
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	return c, nil
}

// mergeUser merges value files the way helm merges -f files: maps merge key by key, anything
// else (null included) is replaced by the later file.
func mergeUser(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				dst[k] = mergeUser(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

func deepCopy(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, x := range t {
			m[k] = deepCopy(x)
		}
		return m
	case []interface{}:
		s := make([]interface{}, len(t))
		for i, x := range t {
			s[i] = deepCopy(x)
		}
		return s
	}
	return v
}

// coalesce lays the user's values over the chart's defaults: a user null deletes the key (the
// way to drop a default), maps merge recursively, anything else replaces the default.
func coalesce(defaults, user map[string]interface{}) map[string]interface{} {
	out := deepCopy(defaults).(map[string]interface{})
	for k, v := range user {
		if v == nil {
			delete(out, k)
			continue
		}
		if um, ok := v.(map[string]interface{}); ok {
			if dm, ok := out[k].(map[string]interface{}); ok {
				out[k] = coalesce(dm, um)
				continue
			}
			out[k] = coalesce(map[string]interface{}{}, um)
			continue
		}
		out[k] = deepCopy(v)
	}
	return out
}

// validateValues checks the coalesced values against values.schema.json, with helm's message.
func validateValues(chartName string, schema []byte, values map[string]interface{}) error {
	if schema == nil {
		return nil
	}
	doc, err := json.Marshal(values)
	if err != nil {
		return err
	}
	res, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(schema), gojsonschema.NewBytesLoader(doc))
	if err != nil {
		return fmt.Errorf("%s/values.schema.json: %v", chartName, err)
	}
	if res.Valid() {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "values don't meet the specifications of the schema(s) in the following chart(s):\n%s:\n", chartName)
	for _, e := range res.Errors() {
		fmt.Fprintf(&b, "- %s: %s\n", e.Field(), e.Description())
	}
	return fmt.Errorf("%s", strings.TrimSuffix(b.String(), "\n"))
}

// versionSet is .Capabilities.APIVersions.
type versionSet []string

func (v versionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

// The API groups of a plain cluster; CRD groups (monitoring.coreos.com, keda.sh) come only
// through --api-versions, as with helm.
var builtinAPIVersions = []string{
	"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v1", "autoscaling/v2",
	"networking.k8s.io/v1", "rbac.authorization.k8s.io/v1", "storage.k8s.io/v1",
	"scheduling.k8s.io/v1", "node.k8s.io/v1", "coordination.k8s.io/v1", "discovery.k8s.io/v1",
	"apiextensions.k8s.io/v1", "admissionregistration.k8s.io/v1", "certificates.k8s.io/v1",
	"events.k8s.io/v1",
}

// chartObject is .Chart: helm passes the Chart.yaml metadata with Go field names.
func chartObject(meta map[string]interface{}) map[string]interface{} {
	names := map[string]string{
		"apiVersion": "APIVersion", "name": "Name", "version": "Version", "appVersion": "AppVersion",
		"kubeVersion": "KubeVersion", "description": "Description", "type": "Type",
		"keywords": "Keywords", "home": "Home", "sources": "Sources", "icon": "Icon",
		"annotations": "Annotations", "deprecated": "Deprecated", "maintainers": "Maintainers",
	}
	out := map[string]interface{}{}
	for k, v := range meta {
		if n, ok := names[k]; ok {
			out[n] = v
		}
	}
	return out
}

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return "" // helm swallows the error too
	}
	return strings.TrimSuffix(string(data), "\n")
}

func toJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func fromYAML(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromJSON(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

// funcMap is helm's: sprig without the functions that read the renderer's environment, plus
// helm's own. include and tpl need the parsed template set, hence the pointer.
func funcMap(set **template.Template) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	includeDepth := 0
	f["toYaml"] = toYAML
	f["fromYaml"] = fromYAML
	f["toJson"] = toJSON
	f["fromJson"] = fromJSON
	f["include"] = func(name string, data interface{}) (string, error) {
		includeDepth++
		defer func() { includeDepth-- }()
		if includeDepth > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		var b strings.Builder
		if err := (*set).ExecuteTemplate(&b, name, data); err != nil {
			return "", err
		}
		return b.String(), nil
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := (*set).Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %v", text, err)
		}
		var b strings.Builder
		if err := t.Execute(&b, data); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %v", text, err)
		}
		return strings.ReplaceAll(b.String(), "<no value>", ""), nil
	}
	f["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return v, fmt.Errorf("%s", msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return v, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	f["fail"] = func(msg string) (string, error) { return "", fmt.Errorf("%s", msg) }
	// No cluster to ask: helm template answers lookup with an empty map too.
	f["lookup"] = func(apiVersion, kind, namespace, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	return f
}

var execErrorRe = regexp.MustCompile(`^template: (\S+?):(\d+:\d+): executing "[^"]*" at <[^>]*>: error calling (?:fail|required): (.*)$`)

// cleanError turns text/template's error for fail/required into helm's "execution error at".
func cleanError(err error) error {
	msg := err.Error()
	// A failure inside include is wrapped once per level; the innermost call is the cause.
	parts := strings.Split(msg, ": error calling include: ")
	last := parts[len(parts)-1]
	if m := execErrorRe.FindStringSubmatch(last); m != nil {
		return fmt.Errorf("execution error at (%s:%s): %s", m[1], m[2], m[3])
	}
	return err
}

type manifest struct {
	Name    string // template path
	Content string
	Kind    string
	Hook    bool
}

var docSep = regexp.MustCompile(`(?:^|\s*\n)---\s*`)

func splitManifests(name, text string) ([]manifest, error) {
	var out []manifest
	for _, d := range docSep.Split(strings.TrimSpace(text), -1) {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(d), &head); err != nil {
			return nil, fmt.Errorf("YAML parse error on %s: %v", name, err)
		}
		_, hook := head.Metadata.Annotations["helm.sh/hook"]
		out = append(out, manifest{Name: name, Content: d, Kind: head.Kind, Hook: hook})
	}
	return out, nil
}

// installOrder is helm's releaseutil.InstallOrder.
var installOrder = []string{
	"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
	"PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
	"ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
	"CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
	"ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
	"DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
	"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
	"APIService",
}

// sortByKind is helm's: known kinds in install order, unknown kinds after them (by kind name),
// the original order kept within a kind.
func sortByKind(ms []manifest) {
	rank := map[string]int{}
	for i, k := range installOrder {
		rank[k] = i
	}
	sort.SliceStable(ms, func(i, j int) bool {
		a, aok := rank[ms[i].Kind]
		b, bok := rank[ms[j].Kind]
		switch {
		case !aok && !bok:
			return ms[i].Kind < ms[j].Kind
		case !aok:
			return false
		case !bok:
			return true
		}
		return a < b
	})
}

// Render renders the chart as `helm template` does.
func Render(c *Chart, opt Options) (*Result, error) {
	chartName := c.Meta["name"].(string)
	user := map[string]interface{}{}
	for _, f := range opt.ValueFiles {
		m, err := readYAMLMap(f)
		if err != nil {
			return nil, err
		}
		user = mergeUser(user, m)
	}
	values := coalesce(c.Values, user)
	if err := validateValues(chartName, c.Schema, values); err != nil {
		return nil, err
	}

	kv := opt.KubeVersion
	if kv == "" {
		kv = "1.29.0"
	}
	ver, err := semver.NewVersion(kv)
	if err != nil {
		return nil, fmt.Errorf("invalid kube version %q: %v", kv, err)
	}
	if kc, _ := c.Meta["kubeVersion"].(string); kc != "" {
		con, err := semver.NewConstraint(kc)
		if err != nil {
			return nil, fmt.Errorf("%s/Chart.yaml: kubeVersion %q: %v", chartName, kc, err)
		}
		if !con.Check(ver) {
			return nil, fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes v%s", kc, ver)
		}
	}
	release := opt.ReleaseName
	if release == "" {
		release = chartName
	}
	ns := opt.Namespace
	if ns == "" {
		ns = "default"
	}
	top := map[string]interface{}{
		"Values": values,
		"Chart":  chartObject(c.Meta),
		"Release": map[string]interface{}{
			"Name": release, "Namespace": ns, "IsInstall": true, "IsUpgrade": false,
			"Revision": 1, "Service": "Helm",
		},
		"Capabilities": map[string]interface{}{
			"KubeVersion": map[string]interface{}{
				"Version": "v" + ver.String(), "GitVersion": "v" + ver.String(),
				"Major": fmt.Sprint(ver.Major()), "Minor": fmt.Sprint(ver.Minor()),
			},
			"APIVersions": versionSet(append(append([]string{}, builtinAPIVersions...), opt.APIVersions...)),
		},
	}

	var set *template.Template
	set = template.New("gotpl").Option("missingkey=zero").Funcs(funcMap(&set))
	names := make([]string, 0, len(c.Templates))
	for n := range c.Templates {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := set.New(n).Parse(c.Templates[n]); err != nil {
			return nil, fmt.Errorf("parse error at (%s", strings.TrimPrefix(err.Error(), "template: "))
		}
	}

	res := &Result{}
	var all []manifest
	for _, n := range names {
		base := path.Base(n)
		if strings.HasPrefix(base, "_") {
			continue // partials define templates; they render nothing
		}
		data := map[string]interface{}{}
		for k, v := range top {
			data[k] = v
		}
		data["Template"] = map[string]interface{}{"Name": n, "BasePath": path.Join(chartName, "templates")}
		var b bytes.Buffer
		if err := set.ExecuteTemplate(&b, n, data); err != nil {
			return nil, cleanError(err)
		}
		out := strings.ReplaceAll(b.String(), "<no value>", "")
		if base == "NOTES.txt" {
			res.Notes = out
			continue
		}
		if !strings.HasSuffix(base, ".yaml") && !strings.HasSuffix(base, ".yml") {
			continue
		}
		ms, err := splitManifests(n, out)
		if err != nil {
			return nil, err
		}
		all = append(all, ms...)
	}
	var generic, hooks []manifest
	for _, m := range all {
		if m.Hook {
			hooks = append(hooks, m)
		} else {
			generic = append(generic, m)
		}
	}
	sortByKind(generic)
	sortByKind(hooks)
	var b strings.Builder
	for _, m := range append(generic, hooks...) {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Name, m.Content)
	}
	res.Manifests = b.String()
	return res, nil
}
