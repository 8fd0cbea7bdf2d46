// wdcni: a small CNI client on Debian's libcni (golang-github-appc-cni-dev), as podman and containerd
// use it: it loads a conflist and runs ADD (printing the result), CHECK, DEL or VERSION through libcni,
// which caches the ADD result and sends it as prevResult to CHECK and DEL.
//
//	wdcni add|check|del NETWORK NETNS CONTAINERID [IFNAME]    wdcni version NETWORK
//
// Environment: NETCONFPATH (default /etc/cni/net.d), CNI_PATH (default /usr/lib/cni), CAP_ARGS (JSON
// capability arguments, e.g. {"portMappings": [...]}), CNI_CACHE_DIR (default /var/lib/cni).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "wdcni:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 3 {
		fail(fmt.Errorf("usage: wdcni add|check|del NETWORK NETNS CONTAINERID [IFNAME] | wdcni version NETWORK"))
	}
	command, network := os.Args[1], os.Args[2]
	conf, err := libcni.LoadConfList(env("NETCONFPATH", "/etc/cni/net.d"), network)
	if err != nil {
		fail(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(env("CNI_PATH", "/usr/lib/cni")),
		env("CNI_CACHE_DIR", "/var/lib/cni"), nil)
	ctx := context.Background()
	if command == "version" {
		for _, plugin := range conf.Plugins {
			info, err := cni.GetVersionInfo(ctx, plugin.Network.Type)
			if err != nil {
				fail(err)
			}
			fmt.Printf("%s: %s\n", plugin.Network.Type, strings.Join(info.SupportedVersions(), " "))
		}
		return
	}
	if len(os.Args) < 5 {
		fail(fmt.Errorf("%s needs NETNS and CONTAINERID", command))
	}
	rt := &libcni.RuntimeConf{ContainerID: os.Args[4], NetNS: os.Args[3], IfName: "eth0"}
	if len(os.Args) > 5 {
		rt.IfName = os.Args[5]
	}
	if capArgs := os.Getenv("CAP_ARGS"); capArgs != "" {
		if err := json.Unmarshal([]byte(capArgs), &rt.CapabilityArgs); err != nil {
			fail(err)
		}
	}
	switch command {
	case "add":
		result, err := cni.AddNetworkList(ctx, conf, rt)
		if err != nil {
			fail(err)
		}
		if err := result.Print(); err != nil {
			fail(err)
		}
	case "check":
		err = cni.CheckNetworkList(ctx, conf, rt)
	case "del":
		err = cni.DelNetworkList(ctx, conf, rt)
	default:
		err = fmt.Errorf("unknown command %q", command)
	}
	if err != nil {
		fail(err)
	}
}
