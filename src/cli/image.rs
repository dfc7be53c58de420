//! `info` and `export` on image files.

use super::CliError;
use backchain::export::{self, Disk};
use backchain::qcow2::{self, Chain, Compression, Format, OpenOptions, WriterOptions};
use backchain::util::output::Output;
use std::path::Path;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    Raw,
    Qcow2,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CompressArg {
    Zstd,
    Deflate,
}

impl CompressArg {
    pub fn compression(self) -> Compression {
        match self {
            CompressArg::Zstd => Compression::Zstd,
            CompressArg::Deflate => Compression::Deflate,
        }
    }
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.3} {}", units[u]).replace(".000", "") }
}

pub fn info(path: &Path, json: bool) -> Result<(), CliError> {
    let chain = match qcow2::detect(path)? {
        Format::Qcow2 => Chain::open(path, &OpenOptions::default())?,
        Format::Raw => {
            let size = std::fs::metadata(path)?.len();
            if json {
                let v = serde_json::json!({"virtual_size": size, "depth": 1, "layers": [
                    {"path": path, "format": "raw", "virtual_size": size, "file_size": size}]});
                outln!("{v:#}");
            } else {
                outln!("image: {}\nfile format: raw\nvirtual size: {} ({size} bytes)", path.display(), human(size));
            }
            return Ok(());
        }
    };
    let info = qcow2::info(&chain)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    for (i, l) in info.layers.iter().enumerate() {
        if i > 0 {
            outln!();
            outln!("backing layer {i}:");
        }
        let p = l.path.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
        outln!("image: {p}");
        outln!("file format: {}", l.format.name());
        outln!("virtual size: {} ({} bytes)", human(l.virtual_size), l.virtual_size);
        outln!("disk size: {}", human(l.file_size));
        outln!("allocated: {}", human(l.allocated_bytes));
        if let Some(cs) = l.cluster_size {
            outln!("cluster_size: {cs}");
        }
        if let Some(v) = l.version {
            outln!("version: {v}");
        }
        if let Some(c) = l.compression_type {
            outln!("compression type: {c}");
        }
        if let Some(r) = l.refcount_bits {
            outln!("refcount bits: {r}");
        }
        if !l.features.is_empty() {
            outln!("features: {}", l.features.join(", "));
        }
        if let Some(b) = &l.backing_file {
            outln!("backing file: {b}");
            outln!("backing file format: {}", l.backing_format.as_deref().unwrap_or("(probed)"));
        }
    }
    Ok(())
}

pub fn export(
    path: &Path,
    limit: Option<u64>,
    format: ExportFormat,
    out: &Path,
    compress: Option<CompressArg>,
) -> Result<(), CliError> {
    if !path.exists() {
        return Err(CliError::msg(format!("{}: no such image", path.display())));
    }
    let opts = OpenOptions::default();
    let chain;
    let raw;
    let (disk, inputs) = match qcow2::detect(path)? {
        Format::Qcow2 => {
            chain = Chain::open(path, &opts)?;
            let inputs = chain.layers().iter().filter_map(|l| l.path.clone()).collect();
            (Disk { limit, ..Disk::chain(&chain) }, inputs)
        }
        Format::Raw => {
            raw = backchain::block::RawFile::open(path)?;
            (Disk { limit, ..Disk::raw(&raw) }, vec![path.to_path_buf()])
        }
    };
    // Never onto an image being read, and never a half-written file in
    // place of a good one.
    let output = Output::create(out, &inputs)?;
    match format {
        ExportFormat::Raw => {
            export::to_raw(&disk, output.write_path())?;
        }
        ExportFormat::Qcow2 => {
            let compression = compress.map(CompressArg::compression);
            export::to_qcow2(&disk, output.write_path(), WriterOptions { compression, ..Default::default() })?;
        }
    }
    output.commit()?;
    Ok(())
}
