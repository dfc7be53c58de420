//! A first end-to-end check against qemu-img: a two-image chain exported by
//! backchain equals qemu-img's conversion, and backchain's own QCOW2 output
//! passes `qemu-img check`.

mod common;
use common::*;

#[test]
fn export_of_a_chain_equals_qemu_img_convert() {
    let d = tempdir();
    let base = d.path().join("base.qcow2");
    let top = d.path().join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"]);
    qemu_io(&base, "qcow2", &["write -P 0x11 0 1M".into(), "write -P 0x22 5M 100k".into()]);
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top.to_str().unwrap()]);
    qemu_io(&top, "qcow2", &["write -P 0x33 512k 1M".into(), "write -z 5M 64k".into()]);

    let out = d.path().join("out.raw");
    run(backchain().args(["export", top.to_str().unwrap(), "--format", "raw", "-o"]).arg(&out));
    assert!(std::fs::read(&out).unwrap() == qemu_raw(&top, d.path()));

    let q = d.path().join("out.qcow2");
    run(backchain().args(["export", top.to_str().unwrap(), "--format", "qcow2", "-o"]).arg(&q));
    qemu_img(&["check", q.to_str().unwrap()]);
    qemu_img(&["compare", "-f", "qcow2", "-F", "raw", q.to_str().unwrap(), out.to_str().unwrap()]);
}
