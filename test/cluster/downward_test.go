package cluster

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestResourceFieldValue(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{
		{Name: "app", Resources: corev1.ResourceRequirements{
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi"), corev1.ResourceCPU: resource.MustParse("1500m")},
			Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		}},
		{Name: "sidecar", Resources: corev1.ResourceRequirements{
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		}},
	}}}
	for _, tc := range []struct {
		ref  corev1.ResourceFieldSelector
		want string
	}{
		{corev1.ResourceFieldSelector{Resource: "limits.memory"}, "1073741824"},
		{corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}, "1024"},
		{corev1.ResourceFieldSelector{Resource: "requests.memory"}, "134217728"},
		{corev1.ResourceFieldSelector{Resource: "limits.cpu"}, "2"}, // rounded up, as the kubelet does
		{corev1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: resource.MustParse("1m")}, "1500"},
		{corev1.ResourceFieldSelector{Resource: "requests.cpu"}, "0"},
		{corev1.ResourceFieldSelector{ContainerName: "sidecar", Resource: "limits.memory"}, "67108864"},
	} {
		got, err := resourceFieldValue(pod, &tc.ref)
		if err != nil || got != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc.ref, got, err, tc.want)
		}
	}
	if _, err := resourceFieldValue(pod, &corev1.ResourceFieldSelector{ContainerName: "nope", Resource: "limits.memory"}); err == nil {
		t.Error("an unknown container was accepted")
	}
}
