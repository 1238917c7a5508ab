//! Hash maps over the agent's own records (Service, frontend, backend and
//! object keys), hashed with foldhash: several times cheaper than std's
//! SipHash on these short keys, and seeded per process too, though it
//! claims only minimal resistance to chosen-key flooding. The keys an
//! outsider could choose are object names, which only those allowed to
//! create Services and EndpointSlices pick, in numbers the API server's
//! quotas bound. A cold start
//! at 100k Services makes millions of operations on them. Measured A/B on
//! the bench machine at 100k Services x 10: the reverse-owner mirror's
//! maps took about 12% off the apply; the writer's, the store's and the
//! manifest merge's took it from 3.0 s to 2.6-2.7 s more.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// The set of [`FastMap`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
