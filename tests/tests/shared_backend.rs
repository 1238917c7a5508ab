//! Services sharing a backend, and a server whose client dials from a
//! backend's address and port, through the manifest source, from
//! `AF_INET`, v4-mapped `AF_INET6` and IPv6 sockets: the scenario of
//! `svc_tests::scenarios::shared_backend`.

svc_tests::family_tests! { svc_tests::source::manifests;
    svc_tests::scenarios::shared_backend::sockets_show_what_they_dialled => sockets_show_what_they_dialled,
    svc_tests::scenarios::shared_backend::accepted_socket_shows_its_client => accepted_socket_shows_its_client,
}
