//! WGSL sources and the pipeline cache. Every shader file is compiled with the common prelude
//! in front, then the shared header of its family if it has one (`conv_common.wgsl`,
//! `data_common.wgsl`: the uniform block, bindings and helpers that the family's files share);
//! pipelines are keyed by (file, entry point, override constants, binding layout) so a plan
//! with hundreds of dispatches creates each distinct pipeline once per context.

use super::Context;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

const PRELUDE: &str = include_str!("../../shaders/common.wgsl");
/// Shared header of the `conv_*` files.
const CONV: &str = include_str!("../../shaders/conv_common.wgsl");
/// Shared header of the `data_*` files.
const DATA: &str = include_str!("../../shaders/data_common.wgsl");
/// Shared header of the matmul files.
const MATMUL: &str = include_str!("../../shaders/matmul_common.wgsl");
/// `matmul_wide.wgsl`'s tile shapes, one family each: 128x128 tiles with a K step of 8 or 16
/// (KernelProfile::wide_bk), 64x64 tiles with 16.
const MATMUL_WIDE8: &str = concat!(include_str!("../../shaders/matmul_common.wgsl"), "\nconst WB: u32 = 2u;\nconst WBK: u32 = 8u;\n");
const MATMUL_WIDE16: &str = concat!(include_str!("../../shaders/matmul_common.wgsl"), "\nconst WB: u32 = 2u;\nconst WBK: u32 = 16u;\n");
const MATMUL_TILE64: &str = concat!(include_str!("../../shaders/matmul_common.wgsl"), "\nconst WB: u32 = 1u;\nconst WBK: u32 = 16u;\n");
/// Workgroup sums and maxima (`wg_sum`, `wg_max`, `wg_sum2`) as a shared-memory tree, and
/// the same functions over subgroup operations. A file that reduces across its workgroup is
/// registered behind each: family `x` with the tree, `x_sg` with subgroups, compiled only on
/// devices with `Features::SUBGROUP` (`Lowering::dispatch_wg_reduce` picks by profile).
const WG_TREE: &str = include_str!("../../shaders/wg_reduce_tree.wgsl");
const WG_SG: &str = include_str!("../../shaders/wg_reduce_subgroup.wgsl");

/// The kernel families: (name, shared header or "", source); the name is the file stem under
/// `shaders/` unless one file makes several families (the headers differ: matmul_wide's tile
/// constants, the `_sg` twins' reductions). The headers are not families of their own: they
/// are validated inside every file that uses them.
const SHADERS: &[(&str, &str, &str)] = &[
    ("common", "", ""),
    ("elementwise", "", include_str!("../../shaders/elementwise.wgsl")),
    ("matmul", MATMUL, include_str!("../../shaders/matmul.wgsl")),
    ("matmul_wide8", MATMUL_WIDE8, include_str!("../../shaders/matmul_wide.wgsl")),
    ("matmul_wide16", MATMUL_WIDE16, include_str!("../../shaders/matmul_wide.wgsl")),
    ("matmul_tile64", MATMUL_TILE64, include_str!("../../shaders/matmul_wide.wgsl")),
    ("reduce", WG_TREE, include_str!("../../shaders/reduce.wgsl")),
    ("reduce_sg", WG_SG, include_str!("../../shaders/reduce.wgsl")),
    ("softmax", WG_TREE, include_str!("../../shaders/softmax.wgsl")),
    ("softmax_sg", WG_SG, include_str!("../../shaders/softmax.wgsl")),
    ("loss", "", include_str!("../../shaders/loss.wgsl")),
    ("layout", "", include_str!("../../shaders/layout.wgsl")),
    ("optim", "", include_str!("../../shaders/optim.wgsl")),
    ("counter", "", include_str!("../../shaders/counter.wgsl")),
    ("norm", WG_TREE, include_str!("../../shaders/norm.wgsl")),
    ("norm_sg", WG_SG, include_str!("../../shaders/norm.wgsl")),
    ("data_sampling", DATA, include_str!("../../shaders/data_sampling.wgsl")),
    ("data_views", DATA, include_str!("../../shaders/data_views.wgsl")),
    ("data_colour", DATA, include_str!("../../shaders/data_colour.wgsl")),
    ("data_mixing", DATA, include_str!("../../shaders/data_mixing.wgsl")),
    ("conv_direct", CONV, include_str!("../../shaders/conv_direct.wgsl")),
    ("conv_depthwise", CONV, include_str!("../../shaders/conv_depthwise.wgsl")),
    ("conv_tiled", CONV, include_str!("../../shaders/conv_tiled.wgsl")),
    ("batchnorm", WG_TREE, include_str!("../../shaders/batchnorm.wgsl")),
    ("batchnorm_sg", WG_SG, include_str!("../../shaders/batchnorm.wgsl")),
    ("layernorm2d", "", include_str!("../../shaders/layernorm2d.wgsl")),
    ("pool", "", include_str!("../../shaders/pool.wgsl")),
    ("attention", "", include_str!("../../shaders/attention.wgsl")),
    ("gather", "", include_str!("../../shaders/gather.wgsl")),
    ("embed", "", include_str!("../../shaders/embed.wgsl")),
    ("obow", "", include_str!("../../shaders/obow.wgsl")),
    ("peak", "", include_str!("../../shaders/peak.wgsl")),
];

/// All shader file names, for the validation test.
pub fn shader_names() -> Vec<&'static str> {
    SHADERS.iter().map(|(n, _, _)| *n).collect()
}

/// The full source of one shader family as the GPU sees it (prelude and header included).
pub fn shader_source(name: &str) -> Option<String> {
    let (_, header, src) = SHADERS.iter().find(|(n, _, _)| *n == name)?;
    Some(if header.is_empty() { format!("{PRELUDE}\n{src}") } else { format!("{PRELUDE}\n{header}\n{src}") })
}

/// How a binding is declared in WGSL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BindingKind {
    Uniform,
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
}

/// Identifies one compiled pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    pub shader: &'static str,
    pub entry: &'static str,
    /// WGSL `override` constants (all integral in this project).
    pub constants: Vec<(&'static str, u32)>,
    /// (binding index, kind) in binding order; binding 0 is the uniform parameter block.
    pub bindings: Vec<(u32, BindingKind)>,
}

impl KernelKey {
    pub fn new(shader: &'static str, entry: &'static str) -> Self {
        KernelKey { shader, entry, constants: Vec::new(), bindings: Vec::new() }
    }
    pub fn constant(mut self, name: &'static str, v: u32) -> Self {
        self.constants.push((name, v));
        self
    }
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    layouts: HashMap<Vec<(u32, BindingKind)>, Arc<wgpu::BindGroupLayout>>,
    pipelines: HashMap<KernelKey, Arc<wgpu::ComputePipeline>>,
}

impl PipelineCache {
    pub(crate) fn len(&self) -> usize {
        self.pipelines.len()
    }

    fn layout_sig(&mut self, device: &wgpu::Device, sig: &[(u32, BindingKind)]) -> Arc<wgpu::BindGroupLayout> {
        if let Some(l) = self.layouts.get(sig) {
            return l.clone();
        }
        let entries: Vec<wgpu::BindGroupLayoutEntry> = sig
            .iter()
            .map(|&(binding, kind)| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match kind {
                    BindingKind::Uniform => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    BindingKind::Read | BindingKind::ReadWrite => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: kind == BindingKind::Read },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                },
                count: None,
            })
            .collect();
        let l = Arc::new(
            device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some("webdistill layout"), entries: &entries }),
        );
        self.layouts.insert(sig.to_vec(), l.clone());
        l
    }

    pub(crate) fn bind_layout(&mut self, device: &wgpu::Device, key: &KernelKey) -> Arc<wgpu::BindGroupLayout> {
        self.layout_sig(device, &key.bindings)
    }

    pub(crate) fn get(&mut self, ctx: &Context, key: &KernelKey) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self.pipelines.get(key) {
            return Ok(p.clone());
        }
        if !self.modules.contains_key(key.shader) {
            let src = shader_source(key.shader).ok_or_else(|| Error::usage(format!("no shader family '{}'", key.shader)))?;
            let desc = wgpu::ShaderModuleDescriptor { label: Some(key.shader), source: wgpu::ShaderSource::Wgsl(src.into()) };
            let module = ctx.scoped(&format!("compiling shader '{}'", key.shader), || {
                if !ctx.profile.bounds_checks {
                    // SAFETY: only on Vulkan, whose core robustBufferAccess (enabled by wgpu)
                    // keeps every access inside its binding; our kernels clamp their indices
                    // anyway and are tested on odd sizes. See KernelProfile::bounds_checks.
                    unsafe {
                        ctx.device.create_shader_module_trusted(
                            desc,
                            wgpu::ShaderRuntimeChecks {
                                bounds_checks: false,
                                force_loop_bounding: false,
                                ..wgpu::ShaderRuntimeChecks::checked()
                            },
                        )
                    }
                } else {
                    ctx.device.create_shader_module(desc)
                }
            })?;
            self.modules.insert(key.shader, module);
        }
        let layout = self.bind_layout(&ctx.device, key);
        let module = &self.modules[key.shader];
        let constants: Vec<(&str, f64)> = key.constants.iter().map(|&(n, v)| (n, v as f64)).collect();
        let pipeline = ctx.scoped(&format!("creating pipeline {}::{}", key.shader, key.entry), || {
            let pl = ctx.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(key.entry),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            ctx.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key.entry),
                layout: Some(&pl),
                module,
                entry_point: Some(key.entry),
                compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, zero_initialize_workgroup_memory: false },
                cache: None,
            })
        })?;
        let p = Arc::new(pipeline);
        self.pipelines.insert(key.clone(), p.clone());
        Ok(p)
    }
}
