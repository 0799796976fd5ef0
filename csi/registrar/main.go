// Command spindle-csi-registrar answers kubelet's plugin registration (pluginregistration/v1) for
// the CSI driver csi.spindle.dev on behalf of `spindle-csi node` (a container beside it in the
// chart's node DaemonSet; a process beside it in e2e/csi/run-pod).
//
// kubelet v1.34 dials the registration socket with its file path as the HTTP/2 :authority,
// which the Rust node plugin's HTTP/2 server (h2) refuses (RST_STREAM PROTOCOL_ERROR), so the
// plugin's own registration service cannot be reached by kubelet; grpc-go accepts it. kubelet's
// CSI calls themselves send "localhost" and reach the Rust plugin directly.
//
// usage: spindle-csi-registrar REGISTRY_DIR CSI_SOCKET
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

const driver = "csi.spindle.dev"

type server struct {
	registerapi.UnimplementedRegistrationServer
	endpoint string
}

func (s *server) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	log.Printf("kubelet asks for the plugin's info")
	return &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: driver, Endpoint: s.endpoint,
		SupportedVersions: []string{"1.0.0"}}, nil
}

func (s *server) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if !st.PluginRegistered {
		log.Printf("kubelet refused the driver: %s", st.Error)
		os.Exit(1)
	}
	log.Printf("kubelet registered the driver")
	return &registerapi.RegistrationStatusResponse{}, nil
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: spindle-csi-registrar REGISTRY_DIR CSI_SOCKET")
		os.Exit(2)
	}
	sock := filepath.Join(os.Args[1], driver+"-reg.sock")
	_ = os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		log.Fatal(err)
	}
	g := grpc.NewServer()
	registerapi.RegisterRegistrationServer(g, &server{endpoint: os.Args[2]})
	log.Printf("serving %s", sock)
	log.Fatal(g.Serve(l))
}
