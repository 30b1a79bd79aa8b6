/**
 * Service worker of the Petrel demo app: it keeps the app shell, so the app opens with no
 * network at all (messages themselves live in IndexedDB, not here). The build (vite.config.ts)
 * prepends `self.__SHELL__`, every file of the build, and `self.__VERSION__`, their hash.
 */
const VERSION = self.__VERSION__ || 'dev'
const SHELL = self.__SHELL__ || ['/']
const CACHE = `petrel-chat-${VERSION}`
/** A navigation waits this long for the network before the cached shell is used. */
const NETWORK_TIMEOUT_MS = 3000

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  )
})

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('petrel-chat-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  )
})

self.addEventListener('fetch', (event) => {
  const { request } = event
  const url = new URL(request.url)
  // The relay's own HTTP routes (health, the device-link mailbox's long polls) go straight through.
  if (request.method !== 'GET' || url.origin !== self.location.origin || url.pathname === '/healthz' || url.pathname.startsWith('/v1/')) return
  // The page: fresh from the network when it answers, else the shell of this version.
  if (request.mode === 'navigate') return event.respondWith(networkFirst(request))
  // Built files have content hashes in their names: the cached copy is the right one.
  event.respondWith(caches.match(request).then((hit) => hit || fetch(request)))
})

async function networkFirst(request) {
  let response
  try {
    response = await new Promise((resolve, reject) => {
      setTimeout(() => reject(new Error('timeout')), NETWORK_TIMEOUT_MS)
      fetch(request).then(resolve, reject)
    })
  } catch {
    response = undefined
  }
  // A proxy in front of a relay that is restarting answers 502/503: the app still opens.
  if (response && response.status < 500) return response
  return (await caches.match('/', { cacheName: CACHE })) || response || Response.error()
}
