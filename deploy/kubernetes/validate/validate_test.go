// Package validate checks the Kubernetes manifests against the Kubernetes
// API's own types (k8s.io/api), decoding strictly: an unknown or misplaced
// field, or a value of the wrong type, fails. It is its own module so the
// server does not depend on the Kubernetes libraries; CI runs it.
package validate

import (
	"bytes"
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

func TestManifests(t *testing.T) {
	b, err := os.ReadFile("../vestibule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	var deploy appsv1.Deployment
	var pdb policyv1.PodDisruptionBudget
	for i, doc := range bytes.Split(b, []byte("\n---\n")) {
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var obj any
		switch meta.APIVersion + " " + meta.Kind {
		case "v1 ConfigMap":
			obj = &corev1.ConfigMap{}
		case "apps/v1 Deployment":
			obj = &deploy
		case "v1 Service":
			obj = &corev1.Service{}
		case "policy/v1 PodDisruptionBudget":
			obj = &pdb
		case "v1 ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "v1 PersistentVolumeClaim":
			obj = &corev1.PersistentVolumeClaim{}
		case "v1 Secret":
			t.Fatalf("document %d: secrets are referenced, never shipped in the manifests", i)
		default:
			t.Fatalf("document %d: unexpected %s %s", i, meta.APIVersion, meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s %s: %v", meta.Kind, meta.Metadata.Name, err)
		}
		if errs := validation.IsDNS1123Subdomain(meta.Metadata.Name); len(errs) > 0 {
			t.Errorf("%s name %q: %v", meta.Kind, meta.Metadata.Name, errs)
		}
		kinds[meta.Kind]++
	}
	for _, k := range []string{"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} {
		if kinds[k] != 1 {
			t.Errorf("%d %s, want 1", kinds[k], k)
		}
	}
	if deploy.Spec.Replicas == nil || *deploy.Spec.Replicas != 3 {
		t.Error("the Deployment does not run 3 replicas")
	}
	pod := deploy.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("readiness is not /readyz")
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("the container is not read-only and without privilege escalation")
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("the pod may run as root")
	}
	for _, e := range c.Env {
		if e.Value != "" && strings.Contains(strings.ToUpper(e.Name), "SECRET") {
			t.Errorf("a secret inlined in %s", e.Name)
		}
	}
	if len(c.EnvFrom) == 0 || c.EnvFrom[0].SecretRef == nil {
		t.Error("secrets are not taken by reference")
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 2 {
		t.Error("the PodDisruptionBudget keeps fewer than 2 replicas")
	}
}
