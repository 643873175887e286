"""Deterministic, realistic RequestSpecs for the benchmark (about 3 KB of JSON each).

Every spec has a flavor with extra specs, an image with properties and timestamps,
scheduler hints, limits and security groups; most reference a server group, about a
third carry a NUMA topology and a fifth PCI requests. Everything comes from one
``random.Random(seed)``, so two runs with the same seed produce the same documents.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from reqspec_repo._spec.model import (
    Flavor,
    ImageMeta,
    InstanceGroupRef,
    Limits,
    NumaCell,
    NumaTopology,
    PciRequest,
    RequestSpec,
)

DEFAULT_SEED = 20240611

_FLAVORS = [
    ("m1.small", 2048, 1, 20),
    ("m1.medium", 4096, 2, 40),
    ("m1.large", 8192, 4, 80),
    ("c5.xlarge", 16384, 8, 100),
    ("r6.2xlarge", 65536, 16, 200),
]
_EXTRA_SPEC_KEYS = [
    "hw:cpu_policy", "hw:cpu_thread_policy", "hw:mem_page_size", "hw:numa_nodes",
    "hw:watchdog_action", "hw_rng:allowed", "quota:disk_read_bytes_sec",
    "quota:disk_write_bytes_sec", "quota:vif_inbound_average", "aggregate_instance_extra_specs:ssd",
    "trait:HW_CPU_X86_AVX2", "trait:CUSTOM_STORAGE_TIER_GOLD", "resources:VGPU",
    "capabilities:hypervisor_type", "os:secure_boot", "hw:vif_multiqueue_enabled",
]
_IMAGE_PROPS = [
    ("hw_disk_bus", ["virtio", "scsi", "sata"]),
    ("hw_scsi_model", ["virtio-scsi"]),
    ("hw_vif_model", ["virtio", "e1000"]),
    ("hw_machine_type", ["q35", "pc-i440fx-8.2"]),
    ("hw_firmware_type", ["uefi", "bios"]),
    ("hw_qemu_guest_agent", ["yes", "no"]),
    ("os_distro", ["ubuntu", "debian", "rhel", "centos", "windows"]),
    ("os_version", ["22.04", "12", "9.4", "2022"]),
    ("os_type", ["linux", "windows"]),
    ("architecture", ["x86_64", "aarch64"]),
    ("img_signature_hash_method", ["SHA-256"]),
    ("img_hide_hypervisor_id", ["true", "false"]),
    ("hypervisor_type", ["qemu", "kvm"]),
    ("owner_specified.openstack.sha256", None),
    ("owner_specified.openstack.object", None),
    ("description", None),
    ("hw_pointer_model", ["usbtablet"]),
    ("img_config_drive", ["optional", "mandatory"]),
    ("hw_boot_menu", ["true", "false"]),
    ("base_image_ref", None),
    ("instance_uuid", None),
]
_ZONES = ["az1", "az2", "az3", "nova"]
_POLICIES = ["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


def make_spec(rng: random.Random) -> RequestSpec:
    """One realistic spec drawn from ``rng``."""
    fname, mem, vcpus, disk = rng.choice(_FLAVORS)
    extra = {
        key: rng.choice(["dedicated", "shared", "required", "large", "2", "true", "1048576", "qemu"])
        for key in rng.sample(_EXTRA_SPEC_KEYS, rng.randint(10, 16))
    }
    flavor = Flavor(
        flavorid=_uuid(rng), name=fname, memory_mb=mem, vcpus=vcpus, root_gb=disk,
        ephemeral_gb=rng.choice([0, 0, 10]), swap=rng.choice([0, 0, 1024]), rxtx_factor=1.0,
        vcpu_weight=rng.choice([None, 10]), is_public=rng.random() < 0.8, extra_specs=extra,
    )
    props: dict[str, object] = {}
    for key, choices in _IMAGE_PROPS:
        if choices is None:
            props[key] = _word(rng, {"owner_specified.openstack.sha256": 64, "description": 480}.get(key, 36))
        else:
            props[key] = rng.choice(choices)
    props["hw_video_ram"] = rng.choice([16, 64, 128])
    props["hw_cpu_max_sockets"] = rng.choice([1, 2, 4])
    created = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 3 * 10**7))
    image = ImageMeta(
        id=_uuid(rng), name=f"{props['os_distro']}-{props['os_version']}-{_word(rng, 6)}",
        status="active", checksum=_word(rng, 32), owner=_uuid(rng).replace("-", ""),
        size=rng.randint(10**8, 10**10), virtual_size=rng.randint(10**9, 10**11),
        container_format="bare", disk_format=rng.choice(["qcow2", "raw"]),
        min_ram=rng.choice([0, 512, 1024]), min_disk=rng.choice([0, 10, 20]),
        created_at=created, updated_at=created + timedelta(hours=rng.randint(0, 500)),
        properties=props,
    )
    numa = None
    if rng.random() < 0.35:
        cells = []
        per = max(1, vcpus // 2)
        for i in range(2):
            cpus = frozenset(range(i * per, (i + 1) * per))
            dedicated = rng.random() < 0.5
            cells.append(NumaCell(
                id=i, cpuset=frozenset() if dedicated else cpus, pcpuset=cpus if dedicated else frozenset(),
                memory=mem // 2, pagesize=rng.choice([None, 2048, 1048576]),
                cpu_policy="dedicated" if dedicated else None,
            ))
        numa = NumaTopology(cells=tuple(cells))
    pci: tuple[PciRequest, ...] = ()
    if rng.random() < 0.2:
        pci = (PciRequest(
            count=rng.choice([1, 2]),
            spec=({"vendor_id": "10de", "product_id": rng.choice(["1eb8", "20b5"]), "dev_type": "type-PF"},),
            alias_name=rng.choice(["gpu-t4", "gpu-a100"]), request_id=_uuid(rng), numa_policy="preferred",
        ),)
    group = None
    hints: dict[str, tuple[str, ...]] = {}
    if rng.random() < 0.7:
        group = InstanceGroupRef(uuid=_uuid(rng), name=f"group-{_word(rng, 8)}", policy=rng.choice(_POLICIES),
                                 rules={"max_server_per_host": str(rng.randint(1, 4))})
        hints["group"] = (group.uuid,)
    if rng.random() < 0.4:
        hints["different_host"] = tuple(_uuid(rng) for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.2:
        hints["build_near_host_ip"] = (f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.0",)
        hints["cidr"] = ("/24",)
    return RequestSpec(
        instance_uuid=_uuid(rng), project_id=_uuid(rng).replace("-", ""), user_id=_uuid(rng).replace("-", ""),
        availability_zone=rng.choice(_ZONES), num_instances=rng.choice([1, 1, 1, 2, 5]),
        flavor=flavor, image=image, numa_topology=numa, pci_requests=pci,
        limits=Limits(vcpu=rng.choice([None, vcpus * 16]), disk_gb=None, memory_mb=rng.choice([None, mem * 2])),
        instance_group=group, scheduler_hints=hints,
        security_groups=tuple(rng.sample(["default", "web", "ssh", "db", "monitoring", "lb"], rng.randint(1, 3))),
        is_bfv=rng.random() < 0.3,
    )


def make_specs(count: int, seed: int = DEFAULT_SEED) -> list[RequestSpec]:
    """``count`` specs from a fixed seed (the same list every run)."""
    rng = random.Random(seed)
    return [make_spec(rng) for _ in range(count)]


def fresh_uuids(count: int, seed: int) -> list[str]:
    """Deterministic instance uuids, e.g. to re-key specs for another batch."""
    rng = random.Random(seed)
    return [_uuid(rng) for _ in range(count)]
