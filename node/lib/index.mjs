import cjs from './keycache.js';

export const { KeyCache, KeyCacheError, KeyCacheStale, UnknownSigningKey, eventsChannel } = cjs;
export default cjs;
