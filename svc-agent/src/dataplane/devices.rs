//! The node devices the TC programs run on (`--devices`): which ones, and
//! attaching `svc_tc_in`/`svc_tc_out` to them as tcx links, pinned like
//! the socket programs' links so the north-south path outlives the agent
//! (a restart swaps them without a gap; `cleanup` detaches them).

use std::{fmt, fs, net::Ipv4Addr, str::FromStr};

use aya::{
    Ebpf,
    maps::HashMap,
    programs::{LinkOrder, SchedClassifier, TcAttachType, links::FdLink, tc::TcAttachOptions},
};
use svc_common::{DeviceInfo, names};

use super::pins::PinLayout;
use crate::{
    error::{Error, Result},
    sys,
};

/// The TC programs and their hooks.
pub(crate) const TC_PROGRAMS: [(&str, TcAttachType); 2] =
    [("svc_tc_in", TcAttachType::Ingress), ("svc_tc_out", TcAttachType::Egress)];

/// `ARPHRD_ETHER`: the only link type the TC programs parse.
const ARPHRD_ETHER: u16 = 1;

/// `--devices`: which devices get the TC programs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceSelection {
    /// The devices of the default routes (IPv4 and IPv6), as kube-proxy's
    /// `--nodeport-addresses primary` picks the node's addresses.
    #[default]
    Auto,
    /// No TC programs: clients outside the node are not served.
    None,
    /// These devices, by name.
    Named(Vec<String>),
}

impl FromStr for DeviceSelection {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "none" | "" => Ok(Self::None),
            list => {
                let names: Vec<String> = list.split(',').map(|n| n.trim().to_owned()).collect();
                if let Some(bad) = names.iter().find(|n| n.is_empty() || n.len() > 15 || n.contains('/')) {
                    return Err(format!("{bad:?} is not a device name"));
                }
                Ok(Self::Named(names))
            }
        }
    }
}

impl fmt::Display for DeviceSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::None => f.write_str("none"),
            Self::Named(names) => f.write_str(&names.join(",")),
        }
    }
}

/// A device the TC programs run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Device {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Its first IPv4 address: the SNAT source of packets it sends to other
    /// nodes (`None`: it sends none SNATed).
    pub addr4: Option<Ipv4Addr>,
}

/// The devices `selection` names, as they are now.
pub(crate) fn resolve(selection: &DeviceSelection) -> Result<Vec<Device>> {
    let names = match selection {
        DeviceSelection::None => return Ok(Vec::new()),
        DeviceSelection::Named(names) => names.clone(),
        DeviceSelection::Auto => {
            let routes = sys::default_route_interfaces().map_err(|e| Error::io("reading the default routes", e))?;
            let mut names = routes.v4;
            for name in routes.v6 {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            names
        }
    };
    let addresses = sys::local_addresses().map_err(|e| Error::io("listing the node's addresses", e))?;
    names
        .into_iter()
        .map(|name| {
            let ifindex = sys::ifindex(&name).ok_or_else(|| {
                Error::Environment(format!("--devices: no device {name:?} in this network namespace"))
            })?;
            // The programs parse an Ethernet header first.
            if sys::link_type(&name) != Some(ARPHRD_ETHER) {
                return Err(Error::Environment(format!(
                    "--devices: {name:?} is not an Ethernet device (L3 devices such as tunnels are not supported)"
                )));
            }
            let addr4 = addresses.iter().find_map(|(dev, ip)| match ip {
                std::net::IpAddr::V4(v4) if *dev == name => Some(*v4),
                _ => None,
            });
            Ok(Device { name, ifindex, addr4 })
        })
        .collect()
}

/// The link pin name of `program` on `device` (bpffs refuses dots).
pub(crate) fn link_name(program: &str, device: &str) -> String {
    format!("{program}-{}", device.replace('.', "_"))
}

/// Loads and pins the TC programs, attaches them to `devices` (new link
/// pinned before the old one is dropped), detaches them from devices no
/// longer selected, and records the devices in `SVC_DEVICES`.
pub(crate) fn attach(ebpf: &mut Ebpf, layout: &PinLayout, devices: &[Device]) -> Result<()> {
    // The devices first: a program attached before would SNAT nothing.
    record(ebpf, devices)?;
    let mut wanted: Vec<String> = Vec::new();
    for (name, hook) in TC_PROGRAMS {
        let program: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| Error::MissingInObject(format!("program {name}")))?
            .try_into()
            .map_err(|e| Error::program(name, e))?;
        program.load().map_err(|e| Error::program(name, e))?;
        super::loader::pin_program(program, name, layout)?;
        for device in devices {
            let link_id = program
                .attach_with_options(&device.name, hook, TcAttachOptions::TcxOrder(LinkOrder::default()))
                .map_err(|e| Error::program(name, e))?;
            let link = program.take_link(link_id).map_err(|e| Error::program(name, e))?;
            let link = FdLink::try_from(link).map_err(|source| Error::Link { name: name.to_owned(), source })?;
            let pin = link_name(name, &device.name);
            super::loader::swap_link_pin(link, name, &pin, layout)?;
            wanted.push(pin);
        }
    }
    detach_others(layout, &wanted)?;
    if devices.is_empty() {
        tracing::info!("no TC devices (--devices): clients outside the node are not served");
    } else {
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        tracing::info!(devices = ?names, "TC programs attached (north-south)");
    }
    Ok(())
}

/// Detaches and unpins TC links left by an earlier start on devices that
/// are not selected now.
fn detach_others(layout: &PinLayout, wanted: &[String]) -> Result<()> {
    let Ok(entries) = fs::read_dir(layout.links_dir()) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = TC_PROGRAMS.iter().any(|(p, _)| name.starts_with(&format!("{p}-")));
        if !ours || wanted.contains(&name) {
            continue;
        }
        if let Err(e) = sys::detach_pinned_link(&entry.path()) {
            tracing::warn!(link = %name, "detaching a TC link of a device no longer selected: {e}");
        }
        fs::remove_file(entry.path()).map_err(|e| Error::io(format!("unpinning {}", entry.path().display()), e))?;
        tracing::info!(link = %name, "detached from a device no longer selected");
    }
    Ok(())
}

/// Rewrites `SVC_DEVICES` to exactly `devices`.
fn record(ebpf: &mut Ebpf, devices: &[Device]) -> Result<()> {
    let map = ebpf.map_mut(names::DEVICES).ok_or_else(|| Error::MissingInObject(format!("map {}", names::DEVICES)))?;
    let mut map: HashMap<_, u32, DeviceInfo> = HashMap::try_from(map).map_err(|e| Error::map(names::DEVICES, e))?;
    let stale: Vec<u32> = map.keys().filter_map(std::result::Result::ok).collect();
    for ifindex in stale {
        if !devices.iter().any(|d| d.ifindex == ifindex) {
            map.remove(&ifindex).map_err(|e| Error::map(names::DEVICES, e))?;
        }
    }
    for device in devices {
        let info = DeviceInfo { addr4: device.addr4.map_or([0; 4], |a| a.octets()), _pad: 0 };
        map.insert(device.ifindex, info, 0).map_err(|e| Error::map(names::DEVICES, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_lists() {
        assert_eq!("auto".parse::<DeviceSelection>().unwrap(), DeviceSelection::Auto);
        assert_eq!("none".parse::<DeviceSelection>().unwrap(), DeviceSelection::None);
        assert_eq!(
            "eth0, bond0.100".parse::<DeviceSelection>().unwrap(),
            DeviceSelection::Named(vec!["eth0".into(), "bond0.100".into()])
        );
        assert!("eth0,,eth1".parse::<DeviceSelection>().is_err());
        assert!("a-very-long-device-name".parse::<DeviceSelection>().is_err());
        assert_eq!(link_name("svc_tc_in", "bond0.100"), "svc_tc_in-bond0_100");
    }
}
