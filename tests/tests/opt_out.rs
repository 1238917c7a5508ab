//! Per-pod and per-namespace opt-out of socket translation
//! (`svc.dataplane.io/socket-lb: disabled`), through the manifest source
//! and through a real API server (`tests/src/scenarios/opt_out.rs`).

mod manifests {
    svc_tests::dial_tests! { svc_tests::source::manifests;
        svc_tests::scenarios::opt_out::exempt_pods_follow_their_annotations => exempt_pods_follow_their_annotations,
    }

    #[test]
    fn a_mesh_sidecar_sees_the_cluster_ip_only_when_exempt() -> anyhow::Result<()> {
        svc_tests::scenarios::opt_out::a_mesh_sidecar_sees_the_cluster_ip_only_when_exempt(
            svc_tests::source::manifests()?,
            svc_tests::Dial::Inet,
        )
    }
}

mod kube {
    #[test]
    fn exempt_pods_follow_their_annotations() -> anyhow::Result<()> {
        svc_tests::scenarios::opt_out::exempt_pods_follow_their_annotations(
            svc_tests::apiserver::kube_source()?,
            svc_tests::Dial::Inet,
        )
    }

    #[test]
    fn a_mesh_sidecar_sees_the_cluster_ip_only_when_exempt() -> anyhow::Result<()> {
        svc_tests::scenarios::opt_out::a_mesh_sidecar_sees_the_cluster_ip_only_when_exempt(
            svc_tests::apiserver::kube_source()?,
            svc_tests::Dial::Inet,
        )
    }
}
