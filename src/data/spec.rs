//! `--data` strings: which dataset to load.

use crate::error::{Error, Result};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// A dataset named on the command line.
///
/// | string | dataset |
/// | --- | --- |
/// | `bundled` (default) | the Fashion-MNIST subset in the binary ([`super::bundled`]) |
/// | `fashion-mnist` | `/usr/share/datasets/fashion-mnist` (Debian `dataset-fashion-mnist`) |
/// | `fashion-mnist:DIR`, `mnist:DIR` | IDX files (`.gz` or raw) with the usual names in DIR |
/// | `cifar10:DIR` | CIFAR-10 binary (`data_batch_1..5.bin`, `test_batch.bin`) |
/// | `cifar100:DIR`, `cifar100-coarse:DIR` | CIFAR-100 binary (`train.bin`, `test.bin`), fine or coarse labels |
/// | `folder:DIR` | one subfolder of PNG/JPEG per class (see [`super::folder`]) |
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DataSpec {
    #[default]
    Bundled,
    FashionMnist(Option<PathBuf>),
    Mnist(PathBuf),
    Cifar10(PathBuf),
    Cifar100 {
        dir: PathBuf,
        coarse: bool,
    },
    Folder(PathBuf),
}

fn bad(s: &str, why: &str) -> Error {
    Error::BadInput {
        tensor: "--data".into(),
        msg: format!(
            "'{s}': {why}. Use bundled, fashion-mnist, fashion-mnist:DIR, mnist:DIR, cifar10:DIR, cifar100:DIR, cifar100-coarse:DIR or folder:DIR"
        ),
    }
}

impl FromStr for DataSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        let (kind, dir) = match t.split_once(':') {
            Some((k, d)) => (k, Some(d)),
            None => (t, None),
        };
        let need_dir = |d: Option<&str>| -> Result<PathBuf> {
            match d {
                Some(d) if !d.is_empty() => Ok(PathBuf::from(d)),
                _ => Err(bad(s, &format!("{kind} needs a directory ({kind}:DIR)"))),
            }
        };
        Ok(match kind.to_ascii_lowercase().as_str() {
            "" | "bundled" | "fashion-mnist-subset" if dir.is_none() => DataSpec::Bundled,
            "fashion-mnist" | "fashion_mnist" | "fmnist" => match dir {
                None => DataSpec::FashionMnist(None),
                Some(_) => DataSpec::FashionMnist(Some(need_dir(dir)?)),
            },
            "mnist" => DataSpec::Mnist(need_dir(dir)?),
            "cifar10" | "cifar-10" => DataSpec::Cifar10(need_dir(dir)?),
            "cifar100" | "cifar-100" => DataSpec::Cifar100 { dir: need_dir(dir)?, coarse: false },
            "cifar100-coarse" | "cifar-100-coarse" => DataSpec::Cifar100 { dir: need_dir(dir)?, coarse: true },
            "folder" | "imagefolder" => DataSpec::Folder(need_dir(dir)?),
            _ => return Err(bad(s, "unknown dataset")),
        })
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Bundled => write!(f, "bundled"),
            DataSpec::FashionMnist(None) => write!(f, "fashion-mnist"),
            DataSpec::FashionMnist(Some(d)) => write!(f, "fashion-mnist:{}", d.display()),
            DataSpec::Mnist(d) => write!(f, "mnist:{}", d.display()),
            DataSpec::Cifar10(d) => write!(f, "cifar10:{}", d.display()),
            DataSpec::Cifar100 { dir, coarse: false } => write!(f, "cifar100:{}", dir.display()),
            DataSpec::Cifar100 { dir, coarse: true } => write!(f, "cifar100-coarse:{}", dir.display()),
            DataSpec::Folder(d) => write!(f, "folder:{}", d.display()),
        }
    }
}

/// Options for formats whose image size is not fixed by the file (image folders): their side,
/// channels and held-out fraction.
pub use super::folder::FolderOptions as LoadOptions;

impl DataSpec {
    /// Load both splits (native only: in the browser there is no file system, so parse fetched
    /// bytes with [`super::bundled_from`] or [`super::formats`] instead).
    pub fn load(&self, opts: &LoadOptions) -> Result<super::Splits> {
        #[cfg(target_arch = "wasm32")]
        {
            let _ = opts;
            match self {
                DataSpec::Bundled => Err(Error::usage(format!(
                    "--data bundled: the wasm build does not hold the bundled subset; fetch data/fashion-mnist-subset/{{{}}} and parse them with data::bundled_from",
                    super::BUNDLED_FILES.join(",")
                ))),
                other => Err(Error::usage(format!(
                    "--data {other}: there is no file system in the browser; parse fetched bytes with data::formats"
                ))),
            }
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            use super::formats::{self, native};
            use std::path::Path;
            match self {
                DataSpec::Bundled => super::bundled(),
                DataSpec::FashionMnist(dir) => {
                    let d = dir.clone().unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR));
                    if dir.is_none() && !Path::new(FASHION_MNIST_DIR).is_dir() {
                        return Err(Error::file(
                            FASHION_MNIST_DIR,
                            "not found: install the Debian package dataset-fashion-mnist, give fashion-mnist:DIR, or use the bundled subset (--data bundled)",
                        ));
                    }
                    native::load_idx_dir(&d, "fashion-mnist", &formats::FASHION_MNIST_CLASSES)
                }
                DataSpec::Mnist(d) => native::load_idx_dir(d, "mnist", &formats::MNIST_CLASSES),
                DataSpec::Cifar10(d) => native::load_cifar10(d),
                DataSpec::Cifar100 { dir, coarse } => native::load_cifar100(dir, *coarse),
                DataSpec::Folder(d) => Ok(super::folder::load_dir(d, *opts)?.0),
            }
        }
    }
}
