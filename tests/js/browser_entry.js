// A website's use of analytics.js (@segment/analytics-next from npm) against Plait alone.
// tests/test_browser.py bundles this file with esbuild and serves it from a page on another
// origin than Plait. The page sets window.PLAIT_CONFIG before loading the bundle:
//   { writeKey, cdnURL, apiHost?, protocol? }
// With apiHost, the Segment.io integration is overridden at load time (the README's way);
// without it, analytics.js takes the API host from Plait's settings document alone.
// window.plaitDone resolves once the page, identify and track calls have been delivered
// (or rejects with the reason they were not).
import { AnalyticsBrowser } from '@segment/analytics-next'

const config = window.PLAIT_CONFIG

const options = {}
if (config.apiHost) {
  options.integrations = {
    'Segment.io': { apiHost: config.apiHost, protocol: config.protocol || 'http' },
  }
}

const analytics = AnalyticsBrowser.load(
  { writeKey: config.writeKey, cdnURL: config.cdnURL },
  options
)
window.plaitAnalytics = analytics

function summary(ctx) {
  const failed = ctx.failedDelivery()
  return {
    event: JSON.parse(JSON.stringify(ctx.event)),
    failed: failed ? String(failed.reason) : null,
  }
}

async function run() {
  const [instance] = await analytics
  const sent = []
  sent.push(summary(await analytics.page('Docs', 'Getting Started', { section: 'install' })))
  sent.push(
    summary(
      await analytics.identify('user-42', {
        email: 'ada@example.com',
        name: 'Ada Lovelace',
        plan: 'pro',
      })
    )
  )
  sent.push(
    summary(
      await analytics.track('Order Completed', {
        orderId: 'o-1001',
        revenue: 42.5,
        currency: 'EUR',
        products: [{ sku: 'sku-1', quantity: 2 }],
      })
    )
  )
  const segmentio = instance.queue.plugins.find((p) => p.name === 'Segment.io')
  return {
    sent,
    anonymousId: instance.user().anonymousId(),
    userId: instance.user().id(),
    segmentio: segmentio ? segmentio.metadata : null,
  }
}

function show(text) {
  document.getElementById('status').textContent = text
}

// window.plaitResult is set once, either way, so a test can wait for it with a timeout.
window.plaitDone = run()
window.plaitDone.then(
  (result) => {
    window.plaitResult = { ok: true, ...result }
    const lines = result.sent.map(({ event, failed }) =>
      [event.type, event.event || event.name || '', event.userId || '-', event.messageId,
        failed ? 'FAILED ' + failed : 'delivered'].join('  ')
    )
    show(
      `sent to Plait at ${result.segmentio.protocol}://${result.segmentio.apiHost}\n` +
        `anonymousId ${result.anonymousId}\n` +
        lines.join('\n')
    )
  },
  (err) => {
    window.plaitResult = { ok: false, error: String((err && err.stack) || err) }
    show('failed: ' + err)
  }
)
