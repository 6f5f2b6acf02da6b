//! Devices as configs and command lines name them: `auto`, `cpu`, `cuda` or
//! `cuda:N`. A [`DeviceSpec`] is parsed once, where the name is read, and
//! resolved to a `tch::Device` (checking that the GPU exists) where it is used.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::{Error, InvalidValue, Result};

/// A device by name; written as a string in configs and on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// CUDA device 0 when one is available, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl DeviceSpec {
    /// The device, checking that a CUDA device of that index exists.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceSpec::Auto => Ok(Device::cuda_if_available()),
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(index) => {
                let available = tch::Cuda::device_count();
                if index as i64 >= available {
                    return Err(Error::config(
                        "device",
                        format!("`{self}` asked for CUDA device {index}, but {available} are available"),
                    ));
                }
                Ok(Device::Cuda(index))
            }
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = InvalidValue;

    fn from_str(name: &str) -> std::result::Result<Self, InvalidValue> {
        let bad = || InvalidValue(format!("`{name}` is not a device; use auto, cpu, cuda or cuda:N"));
        Ok(match name.trim() {
            "auto" => DeviceSpec::Auto,
            "cpu" => DeviceSpec::Cpu,
            "cuda" => DeviceSpec::Cuda(0),
            other => DeviceSpec::Cuda(other.strip_prefix("cuda:").ok_or_else(bad)?.parse().map_err(|_| bad())?),
        })
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = InvalidValue;

    fn try_from(text: String) -> std::result::Result<Self, InvalidValue> {
        text.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(value: DeviceSpec) -> String {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_device_names() {
        for name in ["auto", "cpu", "cuda:1"] {
            assert_eq!(name.parse::<DeviceSpec>().unwrap().to_string(), name);
        }
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cpu.resolve().unwrap(), Device::Cpu);
        if tch::Cuda::device_count() == 0 {
            assert_eq!(DeviceSpec::Auto.resolve().unwrap(), Device::Cpu);
            let err = DeviceSpec::Cuda(0).resolve().unwrap_err().to_string();
            assert!(err.contains("0 are available"), "{err}");
        }
    }
}
