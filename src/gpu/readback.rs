//! Asynchronous readback of small results (losses, counters, requested tensors).
//!
//! A copy into a staging buffer is encoded with the step; `map_async` is started after the
//! submit; the data is taken later without blocking (`try_take`), awaited (`take`), or, on
//! native and only when asked, waited for (`wait`).

use super::Context;
use crate::error::{Error, Result};
use futures_channel::oneshot;

/// One staging buffer and the state of its mapping.
pub struct ReadbackSlot {
    buffer: wgpu::Buffer,
    size: u64,
    pending: Option<oneshot::Receiver<Result<(), wgpu::BufferAsyncError>>>,
}

impl ReadbackSlot {
    pub fn new(ctx: &Context, size: u64, label: &str) -> Self {
        let size = size.div_ceil(wgpu::COPY_BUFFER_ALIGNMENT) * wgpu::COPY_BUFFER_ALIGNMENT;
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ReadbackSlot { buffer, size, pending: None }
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    pub fn busy(&self) -> bool {
        self.pending.is_some()
    }

    /// Start mapping; call after the submit that holds the copy into this slot.
    pub fn start(&mut self) {
        let (tx, rx) = oneshot::channel();
        self.buffer.map_async(wgpu::MapMode::Read, 0..self.size, move |r| {
            let _ = tx.send(r);
        });
        self.pending = Some(rx);
    }

    fn finish(&mut self, ctx: &Context, r: Result<(), wgpu::BufferAsyncError>) -> Result<Vec<u8>> {
        self.pending = None;
        r.map_err(|e| ctx.gpu_error("reading back results", e))?;
        let bytes = {
            let view = self.buffer.get_mapped_range(0..self.size).map_err(|e| ctx.gpu_error("mapping a readback", e))?;
            view.to_vec()
        };
        self.buffer.unmap();
        Ok(bytes)
    }

    /// The data if the GPU has delivered it; never blocks.
    pub fn try_take(&mut self, ctx: &Context) -> Result<Option<Vec<u8>>> {
        ctx.poll();
        let Some(rx) = self.pending.as_mut() else { return Ok(None) };
        match rx.try_recv() {
            Ok(Some(r)) => self.finish(ctx, r).map(Some),
            Ok(None) => Ok(None),
            Err(_) => {
                self.pending = None;
                Err(ctx.gpu_error("reading back results", "the mapping was cancelled"))
            }
        }
    }

    /// Await the data (works on the web, where the browser delivers the mapping).
    pub async fn take(&mut self, ctx: &Context) -> Result<Vec<u8>> {
        let Some(rx) = self.pending.take() else {
            return Err(Error::usage("readback awaited before it was started"));
        };
        ctx.poll();
        #[cfg(not(target_arch = "wasm32"))]
        ctx.wait()?;
        let r = rx.await.map_err(|_| ctx.gpu_error("reading back results", "the mapping was cancelled"))?;
        self.finish(ctx, r)
    }

    /// Block until the data is here (native only; the caller asked to wait).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&mut self, ctx: &Context) -> Result<Vec<u8>> {
        pollster::block_on(self.take(ctx))
    }
}

/// Convenience: read a whole buffer range once (tests, checkpoints).
pub struct Readback;

impl Readback {
    /// Copy `size` bytes at `offset` of `src` and await them.
    pub async fn read(ctx: &Context, src: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        let mut slot = ReadbackSlot::new(ctx, size, "readback");
        let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        let copy = size.div_ceil(4) * 4;
        enc.copy_buffer_to_buffer(src, offset, slot.buffer(), 0, copy);
        ctx.scoped("copying a tensor for readback", || ctx.queue.submit([enc.finish()]))?;
        slot.start();
        let mut bytes = slot.take(ctx).await?;
        bytes.truncate(size as usize);
        Ok(bytes)
    }
}
