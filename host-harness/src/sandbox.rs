//! The sandbox of one execution: the pooling allocator's slots, the memory limit and the guest
//! clock every `Store` is confined by.

use std::time::{Duration, Instant};
use wasmtime::{
    CallHook, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    Store, UpdateDeadline,
};

/// Maximum linear memory of one execution's instance: the pooling allocator reserves this
/// much address space per slot, and [`SandboxLimits::memory_bytes`] cannot exceed it.
pub(crate) const MAX_MEMORY_BYTES: usize = 256 << 20;
/// How often the epoch ticker advances the engine's epoch; the guest-time check runs at most
/// this often while guest code runs.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Instances the pooling allocator keeps ready unless told otherwise: at most this many Stores
/// exist at once (callers that run many executions concurrently gate on
/// `Harness::max_instances`; `serve` sizes its pool with `maxExecutions`).
pub(crate) const DEFAULT_SLOTS: u32 = 64;
/// The most slots a pool may have (`maxExecutions`): every slot reserves 4 GiB of address space
/// for its linear memory (so that compiled code needs no bounds checks), and 16,384 of them
/// take half of the 128 TiB a Linux process has on x86-64.
pub(crate) const MAX_SLOTS: u32 = 16_384;
/// Memory mappings a slot can take: two for its async stack (the stack and its guard page,
/// from the start) and four for its linear memory while an instance uses it (the guest's stack,
/// its data image, its heap, and the reserve beyond). Measured with `scripts/serve-streams.py`:
/// 50,100 mappings with 9,000 slots and 8,000 streams held.
const MAPPINGS_PER_SLOT: u64 = 6;
/// Mappings for everything else (the binary, its libraries, threads, malloc).
const OTHER_MAPPINGS: u64 = 1_000;
/// Bytes of each pooled linear memory kept mapped between Stores and reset in place (only the
/// pages the last Store touched, where PAGEMAP_SCAN is available); above it, memory is given
/// back with `madvise`, so a memory that grew for one large response does not stay large.
const KEEP_RESIDENT_BYTES: usize = 8 << 20;
/// The same for each pooled table.
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;

/// What one execution's `Store` may use: the sandbox boundary of each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Largest linear memory (bytes); growing beyond it fails inside the guest, which traps.
    pub memory_bytes: usize,
    /// Time the guest may spend running WebAssembly over the whole life of the `Store`. Time
    /// spent in host calls (waiting for the upstream) does not count, so long streams are
    /// bounded by the connector's own timeouts (C62, C63), and a guest that spins is trapped
    /// at the next epoch tick after the budget is spent.
    pub guest_time: Duration,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: MAX_MEMORY_BYTES,
            guest_time: Duration::from_secs(10),
        }
    }
}

/// Sets up `config` for sandboxed Stores: epoch interruption (the guest-time budget) and the
/// pooling allocator with `slots` slots of at most [`MAX_MEMORY_BYTES`].
pub(crate) fn configure(config: &mut Config, slots: u32) {
    // Every Store gets a guest-time budget checked at epoch ticks (SandboxLimits).
    config.epoch_interruption(true);
    let mut pool = PoolingAllocationConfig::default();
    // One slot per execution: its component instance, its core instances (four for this
    // component; the limit is only a count, so it has room for other components), its linear
    // memory, its tables, and the async stack that a guest call holds while it waits.
    pool.total_component_instances(slots)
        .total_core_instances(slots * 16)
        .total_stacks(slots)
        .total_memories(slots)
        .total_tables(slots * 4)
        .max_memory_size(MAX_MEMORY_BYTES)
        // A slot's memory is reset for the next Store by rewriting the pages the last one
        // touched (found with Linux's PAGEMAP_SCAN where the kernel has it, 6.7+) instead of
        // `madvise`, which unmaps them: every request then took its page faults again, and
        // the TLB shootdowns of `madvise` interrupt every thread. Measured with
        // `benches/gateway.rs` (1000 requests/s, one run each): p99 added latency
        // 2.0 -> 0.65 ms.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES)
        .pagemap_scan(wasmtime::Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
}

/// A warning when `slots` instances in use at once would need more memory mappings than the
/// kernel allows a process (`vm.max_map_count`, 65,530 by default: about 10,700 slots); an
/// instance beyond that limit fails to instantiate. `None` when they fit, or where the limit
/// cannot be read.
pub(crate) fn mapping_limit_warning(slots: usize) -> Option<String> {
    let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?;
    mapping_warning(slots, limit.trim().parse().ok()?)
}

fn mapping_warning(slots: usize, limit: u64) -> Option<String> {
    let needed = (slots as u64)
        .saturating_mul(MAPPINGS_PER_SLOT)
        .saturating_add(OTHER_MAPPINGS);
    (needed > limit).then(|| {
        format!(
            "{slots} execution slots may need {needed} memory mappings, more than vm.max_map_count ({limit}): executions beyond about {} at once will fail to start; raise vm.max_map_count or lower maxExecutions",
            limit.saturating_sub(OTHER_MAPPINGS) / MAPPINGS_PER_SLOT
        )
    })
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] until the engine is dropped.
pub(crate) fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("wasm-epoch-ticker".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        });
    if let Err(e) = spawned {
        // Without ticks the deadline never fires: the sandbox loses its time limit, not
        // its correctness. Say so loudly.
        tracing::error!("cannot start the epoch ticker thread; guest time limit inactive: {e}");
    }
}

/// The sandbox state a `Store`'s data carries: its memory limit and its guest clock.
pub(crate) struct Sandbox {
    memory: MemoryLimit,
    clock: GuestClock,
}

/// Store data that carries a [`Sandbox`].
pub(crate) trait Sandboxed: Send + 'static {
    /// The sandbox state.
    fn sandbox(&mut self) -> &mut Sandbox;
}

impl Sandbox {
    /// The state for a Store limited by `limits` (memory capped at [`MAX_MEMORY_BYTES`]).
    pub(crate) fn new(limits: SandboxLimits) -> Self {
        Sandbox {
            memory: MemoryLimit {
                bytes: limits.memory_bytes.min(MAX_MEMORY_BYTES),
            },
            clock: GuestClock {
                budget: limits.guest_time,
                used: Duration::ZERO,
                running_since: None,
            },
        }
    }

    /// Confines `store`: its memory growth goes through the limit, its guest clock runs while
    /// WebAssembly runs, and an epoch tick past the budget traps.
    pub(crate) fn confine<T: Sandboxed>(store: &mut Store<T>) {
        store.limiter(|data| &mut data.sandbox().memory);
        store.call_hook(|mut store, hook| {
            let clock = &mut store.data_mut().sandbox().clock;
            match hook {
                CallHook::CallingWasm | CallHook::ReturningFromHost => clock.enter(),
                CallHook::ReturningFromWasm | CallHook::CallingHost => clock.leave(),
            }
            Ok(())
        });
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut store| {
            let clock = &store.data_mut().sandbox().clock;
            let used = clock.used_now();
            if used > clock.budget {
                return Err(wasmtime::format_err!(
                    "guest time limit of {} ms exceeded",
                    clock.budget.as_millis()
                ));
            }
            // Under budget: let other tasks run, then check again at the next tick.
            Ok(UpdateDeadline::Yield(1))
        });
    }
}

/// Guest (WebAssembly) time used by one `Store`, measured with call hooks: the clock runs
/// between entering WebAssembly (or returning to it from the host) and leaving it.
struct GuestClock {
    budget: Duration,
    used: Duration,
    running_since: Option<Instant>,
}

impl GuestClock {
    fn enter(&mut self) {
        self.running_since = Some(Instant::now());
    }

    fn leave(&mut self) {
        if let Some(since) = self.running_since.take() {
            self.used += since.elapsed();
        }
    }

    fn used_now(&self) -> Duration {
        self.used + self.running_since.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

/// The sandbox's memory limit (`guestMemoryLimit`). A guest that grows its memory beyond it
/// traps at once, with an error that says which limit it met. Refusing the growth instead (what
/// wasmtime's `StoreLimits` does) leaves a Rust guest to abort on the failed allocation, a bare
/// `unreachable` trap that names nothing.
struct MemoryLimit {
    bytes: usize,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.bytes {
            return Err(wasmtime::format_err!(
                "guest memory limit of {} exceeded: the guest asked for {}",
                mebibytes(self.bytes),
                mebibytes(desired)
            ));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

/// `bytes` in MiB: whole, or to one decimal.
fn mebibytes(bytes: usize) -> String {
    const MIB: usize = 1 << 20;
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_slots_for_the_mapping_limit_are_named() {
        assert_eq!(mapping_warning(10_000, 65_530), None);
        assert_eq!(
            mapping_warning(16_384, 65_530).as_deref(),
            Some(
                "16384 execution slots may need 99304 memory mappings, more than vm.max_map_count (65530): executions beyond about 10755 at once will fail to start; raise vm.max_map_count or lower maxExecutions"
            )
        );
        assert_eq!(mapping_warning(16_384, 1 << 20), None);
    }

    #[test]
    fn memory_limit_errors_give_sizes_in_mebibytes() {
        assert_eq!(mebibytes(4 << 20), "4 MiB");
        assert_eq!(mebibytes(256 << 20), "256 MiB");
        assert_eq!(mebibytes((8 << 20) + (1 << 17)), "8.1 MiB");
        let mut limit = MemoryLimit { bytes: 4 << 20 };
        assert!(limit.memory_growing(0, 4 << 20, None).unwrap());
        assert!(!limit.memory_growing(0, 2 << 20, Some(1 << 20)).unwrap());
        assert_eq!(
            limit
                .memory_growing(4 << 20, (4 << 20) + 65536, None)
                .unwrap_err()
                .to_string(),
            "guest memory limit of 4 MiB exceeded: the guest asked for 4.1 MiB"
        );
    }
}
