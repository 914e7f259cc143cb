#ifndef SPARQ_EXPORT_H_
#define SPARQ_EXPORT_H_
/* Symbols of libsparq are hidden unless marked SPARQ_API. */
#if defined(SPARQ_BUILDING_LIBRARY)
#define SPARQ_API __attribute__((visibility("default")))
#else
#define SPARQ_API
#endif
#endif /* SPARQ_EXPORT_H_ */
