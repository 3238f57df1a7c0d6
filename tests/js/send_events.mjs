// Sends identify, track, page, screen, group and alias to a Plait server with the real
// @segment/analytics-node SDK, then prints one JSON report on stdout:
//   {"library": {...}, "events": [<each event as the SDK delivered it>],
//    "requests": [{"url", "authorization", "contentEncoding"}], "responses": [{"status", "url"}],
//    "errors": [<delivery failures>]}
// and exits 1 when any event failed delivery.
//
// usage: node send_events.mjs HOST WRITE_KEY   (or PLAIT_HOST / PLAIT_WRITE_KEY)

import { Analytics } from '@segment/analytics-node'

const host = process.argv[2] ?? process.env.PLAIT_HOST
const writeKey = process.argv[3] ?? process.env.PLAIT_WRITE_KEY
if (!host || !writeKey) {
  console.error('usage: node send_events.mjs HOST WRITE_KEY')
  process.exit(2)
}

const analytics = new Analytics({
  writeKey,
  host,
  maxEventsInBatch: 15, // all six calls travel in one /v1/batch request
  flushInterval: 200,
  maxRetries: 2,
  httpRequestTimeout: 5000,
})

const report = { library: null, events: [], requests: [], responses: [], errors: [] }

analytics.on('http_request', (req) => {
  const headers = Object.fromEntries(
    Object.entries(req.headers).map(([k, v]) => [k.toLowerCase(), v]),
  )
  report.requests.push({
    url: req.url,
    method: req.method,
    authorization: headers.authorization ?? null,
    contentEncoding: headers['content-encoding'] ?? null,
  })
})
analytics.on('http_response', (res) => {
  report.responses.push({ status: res.status, url: res.url })
})

function delivered(err, ctx) {
  if (err) {
    report.errors.push({ type: ctx?.event?.type, reason: String(err?.message ?? err) })
  }
  if (ctx?.event) {
    report.events.push(ctx.event)
    report.library ??= ctx.event.context?.library ?? null
  }
}

// The same calls, ids and values as tests/test_sdks.py's EXPECTED.
const USER = 'user-1'
const ANON = 'anon-1'
analytics.identify(
  { userId: USER, traits: { email: 'ada@example.com', plan: 'pro', seats: 3 } },
  delivered,
)
analytics.track(
  {
    userId: USER,
    event: 'Order Completed',
    properties: { total: 42.5, currency: 'EUR', items: [{ sku: 'A-1', qty: 2 }] },
  },
  delivered,
)
analytics.page(
  {
    anonymousId: ANON,
    name: 'Pricing',
    properties: { path: '/pricing', referrer: 'https://example.org/' },
  },
  delivered,
)
analytics.screen({ userId: USER, name: 'Home', properties: { variant: 'b' } }, delivered)
analytics.group(
  { userId: USER, groupId: 'org-1', traits: { name: 'Acme', employees: 12 } },
  delivered,
)
analytics.alias({ userId: USER, previousId: ANON }, delivered)

await analytics.closeAndFlush({ timeout: 15000 })

process.stdout.write(JSON.stringify(report) + '\n')
process.exit(report.errors.length || report.events.length !== 6 ? 1 : 0)
