// Command certmanagershim runs cert-manager's own ingress-shim, the function its controller runs for every
// annotated Ingress (pkg/controller/certificate-shim SyncFnFor), once over the Ingresses of a namespace. The
// Certificates it creates are the ones cert-manager would create: the integration tests use it to check that a
// FlaskApp's Ingress asks cert-manager for the right certificate (cert-manager's controller binary lives in a
// module the Go proxy does not serve, so it is not built here).
//
// Usage: certmanagershim -kubeconfig FILE -namespace NS
// Prints every event the shim records ("Normal CreateCertificate ...", "Warning BadConfig ..."); exits 1 on a
// Warning event or an error.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	cmclient "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned"
	cminformers "github.com/cert-manager/cert-manager/pkg/client/informers/externalversions"
	controller "github.com/cert-manager/cert-manager/pkg/controller"
	shim "github.com/cert-manager/cert-manager/pkg/controller/certificate-shim"
	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	namespace := flag.String("namespace", "", "namespace of the Ingresses")
	flag.Parse()
	if err := run(*kubeconfig, *namespace); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, namespace string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(config)
	if err != nil {
		return err
	}
	cm, err := cmclient.NewForConfig(config)
	if err != nil {
		return err
	}
	factory := cminformers.NewSharedInformerFactoryWithOptions(cm, 0, cminformers.WithNamespace(namespace))
	lister := factory.Certmanager().V1().Certificates().Lister()
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())

	recorder := record.NewFakeRecorder(100)
	// cert-manager's defaults (its controller's --auto-certificate-annotations flag).
	defaults := controller.IngressShimOptions{DefaultAutoCertificateAnnotations: []string{"kubernetes.io/tls-acme"}}
	sync := shim.SyncFnFor(recorder, logr.Discard(), cm, lister, defaults, "cert-manager-certificate-shim")

	ingresses, err := kube.NetworkingV1().Ingresses(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range ingresses.Items {
		if err := sync(ctx, &ingresses.Items[i]); err != nil {
			return fmt.Errorf("ingress %s: %w", ingresses.Items[i].Name, err)
		}
	}
	warned := false
	for {
		select {
		case event := <-recorder.Events:
			fmt.Println(event)
			warned = warned || strings.HasPrefix(event, "Warning")
		default:
			if warned {
				return fmt.Errorf("the ingress-shim refused an Ingress")
			}
			return nil
		}
	}
}
