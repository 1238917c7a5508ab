//! Loading, pinning and attaching the programs.
//!
//! Maps are pinned by name and *reused* when already pinned, which is how
//! a restarted agent adopts the running dataplane. Programs are loaded
//! fresh each start and swapped in without a gap: the new link is attached
//! (multi-attach) before the old one is unpinned, and for the instant both
//! run the second sees an already-translated address, which is not a
//! frontend, and leaves it alone.

use std::{fs, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapInfo, MapType},
    programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr, Program, links::FdLink},
};
use svc_common::{
    AffinityKey, AffinityValue, AffinityValue6, Backend4, Backend6, BackendIndexKey, BackendIndexKey6, Config,
    DeviceInfo, FlowKey4, FlowValue4, Frontend, Frontend6, FrontendKey4, FrontendKey6, LAYOUT_VERSION, RevNatKey,
    RevNatKey6, RevNatValue, ServiceMeta, SlotKey, SockXlat, SockXlat6, names,
};

use super::{maps::BpfMaps, pins::PinLayout};
use crate::{
    error::{Error, Result},
    sys,
};

/// The compiled programs, embedded at build time (see build.rs).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/svc-ebpf"));

/// Program names in the object, in attach order
/// (`svc_common::names::SOCK_PROGRAMS`).
pub(crate) const PROGRAMS: [&str; 9] = names::SOCK_PROGRAMS;

/// Expected (type, key size, value size) of every pinned map, checked
/// before adopting pins left by another agent build.
fn expected_layout(name: &str) -> Option<(MapType, usize, usize)> {
    Some(match name {
        names::FRONTENDS => (MapType::Hash, size_of::<FrontendKey4>(), size_of::<Frontend>()),
        names::BACKENDS => (MapType::Hash, size_of::<SlotKey>(), size_of::<Backend4>()),
        names::BACKEND_INDEX => (MapType::Hash, size_of::<BackendIndexKey>(), size_of::<u32>()),
        names::AFFINITY => (MapType::LruHash, size_of::<AffinityKey>(), size_of::<AffinityValue>()),
        names::REV_NAT => (MapType::LruHash, size_of::<RevNatKey>(), size_of::<RevNatValue>()),
        names::META => (MapType::Hash, size_of::<u32>(), size_of::<ServiceMeta>()),
        names::CONFIG => (MapType::Array, size_of::<u32>(), size_of::<Config>()),
        // Keyed by socket fd from userspace.
        names::SOCK_XLAT => (MapType::SkStorage, size_of::<i32>(), size_of::<SockXlat>()),
        names::FRONTENDS6 => (MapType::Hash, size_of::<FrontendKey6>(), size_of::<Frontend6>()),
        names::BACKENDS6 => (MapType::Hash, size_of::<SlotKey>(), size_of::<Backend6>()),
        names::BACKEND_INDEX6 => (MapType::Hash, size_of::<BackendIndexKey6>(), size_of::<u32>()),
        names::AFFINITY6 => (MapType::LruHash, size_of::<AffinityKey>(), size_of::<AffinityValue6>()),
        names::REV_NAT6 => (MapType::LruHash, size_of::<RevNatKey6>(), size_of::<Backend6>()),
        names::SOCK_XLAT6 => (MapType::SkStorage, size_of::<i32>(), size_of::<SockXlat6>()),
        names::FLOWS => (MapType::LruHash, size_of::<FlowKey4>(), size_of::<FlowValue4>()),
        names::DEVICES => (MapType::Hash, size_of::<u32>(), size_of::<DeviceInfo>()),
        names::NS_STATS => (MapType::PerCpuArray, size_of::<u32>(), size_of::<u64>()),
        names::LB_SOURCES => (MapType::LpmTrie, 4 + size_of::<svc_common::SourceRangeData>(), size_of::<u8>()),
        names::TRACE => (MapType::RingBuf, 0, 0),
        names::TRACE_ON => (MapType::Array, size_of::<u32>(), size_of::<u32>()),
        names::EXEMPT => (MapType::Hash, size_of::<u64>(), size_of::<svc_common::ExemptPod>()),
        names::SOCK_STATS => (MapType::PerCpuArray, size_of::<u32>(), size_of::<u64>()),
        names::BACKEND_REV => (MapType::Hash, size_of::<svc_common::BackendRevKey>(), size_of::<Backend4>()),
        names::BACKEND_REV6 => (MapType::Hash, size_of::<svc_common::BackendRevKey6>(), size_of::<Backend6>()),
        _ => return None,
    })
}

/// `max_entries` of every map the agent creates (pinned maps keep theirs).
/// Each flag sizes the IPv4 map and its IPv6 twin alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapSizes {
    /// SVC_FRONTENDS, SVC_FRONTENDS6.
    pub(crate) frontends: u32,
    /// SVC_BACKENDS, SVC_BACKENDS6.
    pub(crate) backends: u32,
    /// SVC_BE_REV, SVC_BE_REV6.
    pub(crate) reverse_owners: u32,
    /// SVC_BE_INDEX, SVC_BE_INDEX6.
    pub(crate) backend_index: u32,
    /// SVC_AFFINITY, SVC_AFFINITY6.
    pub(crate) affinity: u32,
    /// SVC_REVNAT_SK, SVC_REVNAT6.
    pub(crate) revnat: u32,
    /// SVC_META.
    pub(crate) services: u32,
    /// SVC_FLOWS.
    pub(crate) flows: u32,
}

impl MapSizes {
    /// Each map with the flag that sizes it.
    fn each(&self) -> [(&'static str, &'static str, u32); 14] {
        [
            (names::FRONTENDS, "--max-frontends", self.frontends),
            (names::BACKENDS, "--max-backends", self.backends),
            (names::BACKEND_INDEX, "--max-backend-index", self.backend_index),
            (names::AFFINITY, "--max-affinity", self.affinity),
            (names::REV_NAT, "--max-revnat", self.revnat),
            (names::META, "--max-services", self.services),
            (names::FRONTENDS6, "--max-frontends", self.frontends),
            (names::BACKENDS6, "--max-backends", self.backends),
            (names::BACKEND_INDEX6, "--max-backend-index", self.backend_index),
            (names::AFFINITY6, "--max-affinity", self.affinity),
            (names::REV_NAT6, "--max-revnat", self.revnat),
            (names::FLOWS, "--max-flows", self.flows),
            (names::BACKEND_REV, "--max-reverse-owners", self.reverse_owners),
            (names::BACKEND_REV6, "--max-reverse-owners", self.reverse_owners),
        ]
    }
}

/// Loads the programs, adopts or creates the pinned maps, attaches the
/// socket programs to `cgroup` and the TC programs to `devices`, and pins
/// everything under `layout`. Returns the maps the writer owns.
pub(crate) fn load_and_attach(
    layout: &PinLayout,
    cgroup: &Path,
    devices: &[super::devices::Device],
    sizes: &MapSizes,
) -> Result<BpfMaps> {
    if !sys::is_on_bpffs(layout.root()).map_err(|e| Error::io(format!("statfs {}", layout.root().display()), e))? {
        return Err(Error::Environment(format!(
            "{} is not on a bpffs mount (mount one with `mount -t bpf bpf /sys/fs/bpf`)",
            layout.root().display()
        )));
    }
    for dir in [layout.maps_dir(), layout.programs_dir(), layout.links_dir()] {
        fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    check_pinned_layout(layout)?;
    check_pinned_version(layout)?;
    warn_fixed_capacities(layout, sizes);

    let map_paths: Vec<(&str, std::path::PathBuf)> = names::ALL.iter().map(|n| (*n, layout.map(n))).collect();
    let mut loader = EbpfLoader::new();
    // No CO-RE relocations in our programs (they read only the context and
    // packets): parsing the kernel's BTF would be the largest allocation of
    // the agent's life (about 20 MiB) for nothing.
    loader.btf(None);
    for (name, path) in &map_paths {
        loader.map_pin_path(name, path.as_path());
    }
    for (name, _, size) in sizes.each() {
        loader.map_max_entries(name, size);
    }
    let mut ebpf = loader.load(EBPF_OBJECT)?;

    write_config(&mut ebpf)?;
    let cgroup_dir =
        fs::File::open(cgroup).map_err(|e| Error::io(format!("opening cgroup {}", cgroup.display()), e))?;
    for name in PROGRAMS {
        attach_program(&mut ebpf, name, &cgroup_dir, layout)?;
    }
    super::devices::attach(&mut ebpf, layout, devices)?;
    tracing::info!(
        cgroup = %cgroup.display(),
        pins = %layout.root().display(),
        "programs loaded, attached and pinned"
    );
    BpfMaps::from_ebpf(&mut ebpf)
}

/// Refuses to adopt pinned maps whose shape differs from what this build
/// writes (a different version left them); `cleanup` resolves it.
fn check_pinned_layout(layout: &PinLayout) -> Result<()> {
    for name in names::ALL {
        let path = layout.map(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(|e| Error::map(name, e))?;
        let (ty, key, value) = expected_layout(name).expect("every map has a layout");
        let actual =
            (info.map_type().map_err(|e| Error::map(name, e))?, info.key_size() as usize, info.value_size() as usize);
        if actual != (ty, key, value) {
            return Err(Error::IncompatiblePin {
                path,
                detail: format!("found {actual:?}, expected {:?}", (ty, key, value)),
            });
        }
    }
    Ok(())
}

/// Refuses pins written by an agent with another map layout: same sizes
/// do not mean the same meaning (`svc_common::LAYOUT_VERSION`). There is no
/// in-place migration; `cleanup` (or a side-by-side start on a new pin
/// directory, docs/maps.md) is the way to a new layout.
fn check_pinned_version(layout: &PinLayout) -> Result<()> {
    let path = layout.map(names::CONFIG);
    if !path.exists() {
        return Ok(());
    }
    let map = super::maps::open_pinned_map(layout, names::CONFIG)?;
    let config: Array<_, Config> = Array::try_from(map).map_err(|e| Error::map(names::CONFIG, e))?;
    let pinned = config.get(&0, 0).map_err(|e| Error::map(names::CONFIG, e))?;
    if pinned.layout_version != LAYOUT_VERSION {
        return Err(Error::IncompatiblePin {
            path,
            detail: format!(
                "the pinned maps have layout version {}, this agent writes version {LAYOUT_VERSION}",
                pinned.layout_version
            ),
        });
    }
    Ok(())
}

/// Pinned maps keep the size they were created with: say so when the
/// `--max-*` flags ask for another one.
fn warn_fixed_capacities(layout: &PinLayout, sizes: &MapSizes) {
    for (name, flag, want) in sizes.each() {
        let Ok(info) = MapInfo::from_pin(layout.map(name)) else { continue };
        if info.max_entries() != want {
            tracing::warn!(
                map = name,
                pinned = info.max_entries(),
                requested = want,
                "{flag} {want} does not apply: the pinned {name} keeps its {} entries \
                 (to resize without failing a connect, see docs/maps.md, \"Resizing\")",
                info.max_entries()
            );
        }
    }
}

/// Records the host network namespace (for host-only frontends) and the
/// layout version. Written every start: it is the agent's own view (the
/// exempt count excepted).
fn write_config(ebpf: &mut Ebpf) -> Result<()> {
    let host_netns_cookie =
        sys::current_netns_cookie().map_err(|e| Error::io("reading the network namespace cookie", e))?;
    let map = ebpf.map_mut(names::CONFIG).ok_or_else(|| Error::MissingInObject(format!("map {}", names::CONFIG)))?;
    let mut config: Array<_, Config> = Array::try_from(map).map_err(|e| Error::map(names::CONFIG, e))?;
    // The exempt count belongs to the pinned SVC_EXEMPT, which a restart
    // keeps: zeroing it would translate exempt pods until the next sync.
    let exempt_cgroups = config.get(&0, 0).map_or(0, |c| c.exempt_cgroups);
    let value = Config { host_netns_cookie, layout_version: LAYOUT_VERSION, exempt_cgroups };
    config.set(0, value, 0).map_err(|e| Error::map(names::CONFIG, e))
}

/// Pins a loaded program under its name (replacing an earlier pin).
pub(super) fn pin_program(program: &mut impl PinnableProgram, name: &str, layout: &PinLayout) -> Result<()> {
    let prog_pin = layout.program(name);
    remove_if_exists(&prog_pin)?;
    program.pin_at(&prog_pin).map_err(|source| Error::Pin {
        name: name.to_owned(),
        what: "program",
        path: prog_pin.clone(),
        source,
    })
}

/// A program type whose `pin` we call (aya has no trait for it).
pub(super) trait PinnableProgram {
    fn pin_at(&mut self, path: &Path) -> std::result::Result<(), aya::pin::PinError>;
}

impl PinnableProgram for CgroupSockAddr {
    fn pin_at(&mut self, path: &Path) -> std::result::Result<(), aya::pin::PinError> {
        self.pin(path)
    }
}

impl PinnableProgram for CgroupSock {
    fn pin_at(&mut self, path: &Path) -> std::result::Result<(), aya::pin::PinError> {
        self.pin(path)
    }
}

impl PinnableProgram for aya::programs::SchedClassifier {
    fn pin_at(&mut self, path: &Path) -> std::result::Result<(), aya::pin::PinError> {
        self.pin(path)
    }
}

/// Loads one cgroup program (a sock_addr hook, or the sock_release one),
/// pins it, attaches it and swaps its link pin.
fn attach_program(ebpf: &mut Ebpf, name: &str, cgroup: &fs::File, layout: &PinLayout) -> Result<()> {
    let program = ebpf.program_mut(name).ok_or_else(|| Error::MissingInObject(format!("program {name}")))?;
    let program_err = |e| Error::program(name, e);
    // A cgroup bpf_link is always attached in multi mode by the kernel and
    // link_create rejects any flag, so "Single" here still lets other
    // programs (a second agent, a parent cgroup's) coexist.
    let link: FdLink = match program {
        Program::CgroupSockAddr(program) => {
            program.load().map_err(program_err)?;
            pin_program(program, name, layout)?;
            let link_id = program.attach(cgroup, CgroupAttachMode::Single).map_err(program_err)?;
            program.take_link(link_id).map_err(program_err)?.try_into()
        }
        Program::CgroupSock(program) => {
            program.load().map_err(program_err)?;
            pin_program(program, name, layout)?;
            let link_id = program.attach(cgroup, CgroupAttachMode::Single).map_err(program_err)?;
            program.take_link(link_id).map_err(program_err)?.try_into()
        }
        _ => return Err(program_err(aya::programs::ProgramError::UnexpectedProgramType)),
    }
    .map_err(|source| Error::Link { name: name.to_owned(), source })?;
    swap_link_pin(link, name, name, layout)
}

/// Pins the new `link` of `program` under a staging name, then drops the
/// old pin `pin` (which detaches the old link) and gives the new one its
/// name. At every point at least one link is attached and pinned.
pub(super) fn swap_link_pin(link: FdLink, program: &str, pin: &str, layout: &PinLayout) -> Result<()> {
    let staged = layout.staged_link(pin);
    remove_if_exists(&staged)?;
    link.pin(&staged).map_err(|source| Error::Pin {
        name: program.to_owned(),
        what: "link",
        path: staged.clone(),
        source,
    })?;
    let pinned = layout.link(pin);
    remove_if_exists(&pinned)?;
    fs::rename(&staged, &pinned).map_err(|e| Error::io(format!("renaming {}", staged.display()), e))?;
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}
