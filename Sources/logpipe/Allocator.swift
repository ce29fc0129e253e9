import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// glibc malloc settings for a process that moves many lines through
/// short-lived buffers of a few hundred KiB (read chunks, batches, publish
/// buffers).
///
/// By default glibc serves such blocks with fresh `mmap`s or returns them to
/// the kernel on free, so every batch touches new pages: about 28,000 page
/// faults for a million lines `stdin → partition → nats`. Keeping blocks up to
/// 4 MiB in the heap, trimming only above 16 MiB free, and two arenas cut that
/// to about 11,000 and the sys time by a third (measured side by side). A
/// user's own `GLIBC_TUNABLES` wins: then nothing is changed.
enum Allocator {
    static func tune() {
        #if canImport(Glibc)
            guard ProcessInfo.processInfo.environment["GLIBC_TUNABLES"] == nil else { return }
            // <malloc.h> is not part of the Glibc module; the values are
            // glibc's M_MMAP_THRESHOLD (-3), M_TRIM_THRESHOLD (-1), M_ARENA_MAX (-8).
            _ = glibcMallopt(-3, 4 * 1024 * 1024)
            _ = glibcMallopt(-1, 16 * 1024 * 1024)
            _ = glibcMallopt(-8, 2)
        #endif
    }
}

#if canImport(Glibc)
    @_silgen_name("mallopt")
    private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif
