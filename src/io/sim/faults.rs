//! Which faults the simulated disk injects, and how many it did.

/// Fault rates in parts per million of operations (0 = never).
#[derive(Debug, Clone, Default)]
pub struct SimFaults {
    /// A write fails with EIO; a random subset of its sectors still lands
    /// in the page cache.
    pub write_eio_ppm: u32,
    /// An fdatasync fails with EIO, and the kernel forgets the dirty pages
    /// it covered (Linux marks them clean): a later fsync will not save them.
    pub fsync_eio_ppm: u32,
    /// A write transfers only a prefix of its bytes.
    pub short_write_ppm: u32,
    /// A read fails with EIO.
    pub read_eio_ppm: u32,
    /// A read returns data with one bit flipped.
    pub read_bitflip_ppm: u32,
    /// Writes fail with ENOSPC once the files hold more than this many bytes.
    pub disk_bytes_max: Option<u64>,
    /// A write fails with ENOSPC and writes nothing, while the next may fit
    /// (as on ext4, where a smaller write can fit where a larger did not).
    pub enospc_ppm: u32,
    /// A write reports success but lands whole at another block-aligned
    /// position of its file (a misdirected write: firmware or driver bug).
    pub misdirected_write_ppm: u32,
}

/// How many faults of each kind a [`SimIo`] injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimFaultCounts {
    pub write_eio: u64,
    pub fsync_eio: u64,
    pub enospc: u64,
    pub short_writes: u64,
    pub read_eio: u64,
    /// Reads refused because they touched a range marked unreadable.
    pub latent_read_eio: u64,
    pub read_bitflips: u64,
    pub misdirected_writes: u64,
}

impl SimFaultCounts {
    pub fn add(&mut self, o: &SimFaultCounts) {
        self.write_eio += o.write_eio;
        self.fsync_eio += o.fsync_eio;
        self.enospc += o.enospc;
        self.short_writes += o.short_writes;
        self.read_eio += o.read_eio;
        self.latent_read_eio += o.latent_read_eio;
        self.read_bitflips += o.read_bitflips;
        self.misdirected_writes += o.misdirected_writes;
    }

    pub fn total(&self) -> u64 {
        self.write_eio
            + self.fsync_eio
            + self.enospc
            + self.short_writes
            + self.read_eio
            + self.latent_read_eio
            + self.read_bitflips
            + self.misdirected_writes
    }
}

impl std::fmt::Display for SimFaultCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "write EIO {}, fdatasync EIO {}, ENOSPC {}, short writes {}, read EIO {}, latent read EIO {}, read bit flips {}, misdirected writes {}",
            self.write_eio,
            self.fsync_eio,
            self.enospc,
            self.short_writes,
            self.read_eio,
            self.latent_read_eio,
            self.read_bitflips,
            self.misdirected_writes
        )
    }
}
