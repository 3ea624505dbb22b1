//! Settings of the process as a whole: the binary's `main` applies the defaults before the
//! runtime starts, `serve` the configured ones before the app is built.

/// Lets the kernel back this process's memory with transparent huge pages when `enabled`, else
/// keeps it to 4 KiB pages; whether the kernel took the setting (`false` where it refuses it;
/// other systems than Linux have no such setting and report `true`).
///
/// mimalloc asks for huge pages on its arenas (`madvise(MADV_HUGEPAGE)`), so with them a
/// 2 MiB page is resident as soon as one byte of it is touched: about 18 MB more RSS under the
/// dashboard load, for no CPU per request that the benchmark can tell apart (README
/// "Performance"). Off, the kernel ignores that advice for every mapping of the process
/// (`PR_SET_THP_DISABLE`, as `MIMALLOC_ALLOW_THP=0` does, but set by configuration).
pub fn huge_pages(enabled: bool) -> bool {
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::set_thp_disable(!enabled).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = enabled;
        true
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use nix::sys::prctl::get_thp_disable;

    use super::huge_pages;

    #[test]
    fn huge_pages_are_turned_off_for_the_process_and_on_again_when_asked_for() {
        assert!(huge_pages(false));
        assert_eq!(get_thp_disable(), Ok(true));
        assert!(huge_pages(true));
        assert_eq!(get_thp_disable(), Ok(false));
    }
}
