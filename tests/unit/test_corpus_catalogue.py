"""The corpus catalogue: which package names are versions of which corpus kernel."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from explorer.corpus.catalogue import KERNELS, USERSPACE_SUITE


@given(name=st.sampled_from(sorted(KERNELS)), abi=st.integers(0, 10**6))
def test_every_upload_of_a_kernel_gives_back_its_abi_number(name: str, abi: int) -> None:
    source = KERNELS[name]
    assert source.abi_of(source.package_template.format(abi=abi)) == abi


@pytest.mark.parametrize(
    ("name", "other_package"),
    [
        ("armmp", "linux-image-6.1.0-50-armmp-lpae"),
        ("armmp", "linux-image-6.1.0-50-rt-armmp"),
        ("armmp", "linux-image-6.1.0-50-armmp-dbg"),
        ("armmp", "linux-image-5.10.0-32-armmp"),
        ("armmp-6.12", "linux-image-6.12.117+deb13-armmp-lpae"),
        ("armmp-6.12", "linux-image-6.12.117+deb13-rt-armmp"),
        ("armmp-6.12", "linux-image-6.12.117Xdeb13-armmp"),  # '+' and '.' are literal, not regex
        ("rpi", "linux-image-armmp"),
        ("4kc-malta", "linux-image-6.1.0-x-4kc-malta"),
        ("arm64", "linux-image-6.1.0-57-arm64-unsigned"),  # the same kernel, listed twice
        ("arm64", "linux-image-6.1.0-57-arm64-dbg"),
        ("arm64", "linux-image-6.1.0-57-rt-arm64"),
        ("arm64-6.12", "linux-image-6.12.118+deb13-arm64-16k"),
    ],
)
def test_other_packages_are_not_versions_of_a_kernel(name: str, other_package: str) -> None:
    assert KERNELS[name].abi_of(other_package) is None


def test_the_bookworm_names_stay_the_flavours_alone() -> None:
    assert {n for n, k in KERNELS.items() if k.suite == "bookworm"} == {
        "armmp",
        "marvell",
        "rpi",
        "4kc-malta",
        "arm64",
    }
    assert USERSPACE_SUITE == "bookworm"
