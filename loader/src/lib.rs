//! ELF loading: kernel-image and module objects, `.data..percpu` placement in the reserved chunk, per-arch relocations.
