//! Choosing an adapter and opening a device on it.
//!
//! The adapter is the first one whose name contains `STRATA_ADAPTER` (case-insensitive)
//! when that variable is set, else the most capable one: a discrete GPU before an
//! integrated one, before a virtual one, before a CPU implementation (lavapipe). Only
//! adapters that run compute shaders count. wgpu's own `WGPU_BACKEND` (e.g. `vulkan`)
//! restricts the backends searched.
//!
//! The device asks for the adapter's own limits, so a model may use as much memory in one
//! binding as the adapter allows. Errors that wgpu would otherwise turn into panics (its
//! default handler for uncaptured errors panics) are recorded instead and reported by the
//! next [`GpuDevice::take_error`]; a lost device is recorded the same way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::GpuError;

/// Where to look for an adapter and how long to wait for the GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuOptions {
    /// A substring of the adapter's name to pick it by (`STRATA_ADAPTER`).
    pub adapter: Option<String>,
    /// How long one run may wait for the GPU before it is an error
    /// (`STRATA_GPU_TIMEOUT_SECS`, default 120 s).
    pub timeout: Duration,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            adapter: None,
            timeout: Duration::from_secs(120),
        }
    }
}

impl GpuOptions {
    /// The options the environment sets (`STRATA_ADAPTER`, `STRATA_GPU_TIMEOUT_SECS`).
    pub fn from_env() -> GpuOptions {
        let mut options = GpuOptions::default();
        if let Ok(name) = std::env::var("STRATA_ADAPTER")
            && !name.trim().is_empty()
        {
            options.adapter = Some(name.trim().to_string());
        }
        if let Some(secs) = std::env::var("STRATA_GPU_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
        {
            options.timeout = Duration::from_secs(secs);
        }
        options
    }
}

/// What `info` prints about an adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}", self.name, self.backend, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        write!(f, ")")
    }
}

fn summary(info: &wgpu::AdapterInfo) -> AdapterSummary {
    let driver = [info.driver.as_str(), info.driver_info.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    AdapterSummary {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: match info.device_type {
            wgpu::DeviceType::DiscreteGpu => "discrete GPU",
            wgpu::DeviceType::IntegratedGpu => "integrated GPU",
            wgpu::DeviceType::VirtualGpu => "virtual GPU",
            wgpu::DeviceType::Cpu => "CPU",
            wgpu::DeviceType::Other => "other",
        }
        .to_string(),
        driver,
    }
}

/// Finds the adapter [`GpuOptions`] asks for (see the module docs).
pub fn select_adapter(options: &GpuOptions) -> Result<wgpu::Adapter, GpuError> {
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters: Vec<wgpu::Adapter> = pollster::block_on(instance.enumerate_adapters(backends))
        .into_iter()
        .filter(|a| {
            a.get_downlevel_capabilities()
                .flags
                .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        })
        .collect();
    if let Some(wanted) = &options.adapter {
        let lower = wanted.to_lowercase();
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&lower))
            .ok_or_else(|| GpuError::NoMatchingAdapter {
                wanted: wanted.clone(),
                available: names,
            });
    }
    let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    adapters
        .into_iter()
        .min_by_key(rank)
        .ok_or_else(|| GpuError::NoAdapter {
            backends: (backends & wgpu::Instance::enabled_backend_features())
                .iter_names()
                .map(|(name, _)| name.to_lowercase())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The adapter a GPU session would use, for `info`.
pub fn describe_adapter(options: &GpuOptions) -> Result<AdapterSummary, GpuError> {
    select_adapter(options).map(|a| summary(&a.get_info()))
}

/// An open device with its queue, and the errors wgpu reported outside error scopes.
pub struct GpuDevice {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub limits: wgpu::Limits,
    pub timeout: Duration,
    errors: Arc<Mutex<Vec<String>>>,
}

impl GpuDevice {
    /// Opens a device on the adapter `options` selects.
    pub fn open(options: &GpuOptions) -> Result<GpuDevice, GpuError> {
        let adapter = select_adapter(options)?;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("strata"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::RequestDevice(e.to_string()))?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = Arc::clone(&errors);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut list) = sink.lock() {
                list.push(e.to_string());
            }
        }));
        let sink = Arc::clone(&errors);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut list) = sink.lock() {
                list.push(format!("device lost ({reason:?}): {message}"));
            }
        });
        Ok(GpuDevice {
            device,
            queue,
            adapter: summary(&adapter.get_info()),
            limits,
            timeout: options.timeout,
            errors,
        })
    }

    /// The first error wgpu reported since the last call, if any.
    pub fn take_error(&self) -> Option<String> {
        let mut list = self.errors.lock().ok()?;
        let first = list.first().cloned();
        list.clear();
        first
    }

    /// Waits for all submitted work, at most [`GpuDevice::timeout`].
    pub fn wait(&self, submission: wgpu::SubmissionIndex) -> Result<(), GpuError> {
        let polled = self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(submission),
            timeout: Some(self.timeout),
        });
        if let Some(e) = self.take_error() {
            return Err(GpuError::Device(e));
        }
        match polled {
            Ok(_) => Ok(()),
            Err(wgpu::PollError::Timeout) => Err(GpuError::Timeout {
                seconds: self.timeout.as_secs(),
            }),
            Err(e) => Err(GpuError::Device(e.to_string())),
        }
    }
}
