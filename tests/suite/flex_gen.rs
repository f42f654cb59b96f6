//! A generated Flex activity statement of any size, produced by a `Read` impl so that it is
//! never held in memory (shared by the tests and `benches/flex_scan.rs`).
#![allow(dead_code)]

use std::io::Read;

/// One realistic IB trade row (about 600 bytes of attributes).
pub const TRADE_ROW: &str = concat!(
    r#"<Trade accountId="U9000001" acctAlias="" model="" currency="USD" assetCategory="STK" "#,
    r#"fxRateToBase="1" symbol="AAA" description="AAA HOLDINGS INC &amp; CO" conid="123456789" "#,
    r#"securityID="US0000000001" securityIDType="ISIN" cusip="000000001" isin="US0000000001" "#,
    r#"listingExchange="NASDAQ" multiplier="1" tradeID="1234567890" reportDate="20261120" "#,
    r#"tradeDate="20261120" tradeTime="093406" settleDateTarget="20261124" "#,
    r#"transactionType="ExchTrade" exchange="ISLAND" quantity="100" tradePrice="10.4" "#,
    r#"tradeMoney="1040" proceeds="-1040" taxes="0" ibCommission="-1" "#,
    r#"ibCommissionCurrency="USD" netCash="-1041" closePrice="10.5" openCloseIndicator="O" "#,
    r#"notes="P" cost="1041" fifoPnlRealized="0" mtmPnl="10" buySell="BUY" "#,
    r#"ibOrderID="987654321" ibExecID="0000d514.5159662d.01.01" orderTime="20261120;093405" "#,
    r#"levelOfDetail="EXECUTION" orderType="LMT" />"#,
    "\n"
);

/// One open-position row.
pub const POSITION_ROW: &str = concat!(
    r#"<OpenPosition accountId="U9000001" currency="USD" assetCategory="STK" symbol="AAA" "#,
    r#"conid="123456789" reportDate="20261120" position="100" markPrice="10.5" "#,
    r#"positionValue="1050" openPrice="10.4" costBasisPrice="10.41" levelOfDetail="SUMMARY" />"#,
    "\n"
);

/// A statement with `accounts` statements of `trades` trade rows and `positions` position
/// rows each, plus an AccountInformation element and an empty TransactionTaxes section.
pub struct FlexGen {
    segments: Vec<(Vec<u8>, u64)>,
    seg: usize,
    rep: u64,
    off: usize,
}

impl FlexGen {
    pub fn new(accounts: u32, trades: u64, positions: u64) -> Self {
        let mut segments = vec![(
            format!(
                "<FlexQueryResponse queryName=\"Generated\" type=\"AF\">\n<FlexStatements count=\"{accounts}\">\n"
            )
            .into_bytes(),
            1,
        )];
        for a in 0..accounts {
            segments.push((
                format!(
                    "<FlexStatement accountId=\"U{:07}\" fromDate=\"20260101\" toDate=\"20261120\" period=\"YearToDate\" whenGenerated=\"20261121;063000\">\n\
                     <AccountInformation accountId=\"U{:07}\" currency=\"USD\" />\n<Trades>\n",
                    9_000_000 + a,
                    9_000_000 + a
                )
                .into_bytes(),
                1,
            ));
            segments.push((TRADE_ROW.as_bytes().to_vec(), trades));
            segments.push((b"</Trades>\n<OpenPositions>\n".to_vec(), 1));
            segments.push((POSITION_ROW.as_bytes().to_vec(), positions));
            segments.push((
                b"</OpenPositions>\n<TransactionTaxes>\n</TransactionTaxes>\n</FlexStatement>\n"
                    .to_vec(),
                1,
            ));
        }
        segments.push((b"</FlexStatements>\n</FlexQueryResponse>\n".to_vec(), 1));
        FlexGen {
            segments,
            seg: 0,
            rep: 0,
            off: 0,
        }
    }

    /// About `mb` megabytes (10^6 bytes) over `accounts` accounts, mostly trades.
    pub fn of_size(mb: u64, accounts: u32) -> Self {
        let per_account = mb * 1_000_000 / u64::from(accounts);
        let trades = per_account * 9 / 10 / TRADE_ROW.len() as u64;
        let positions = per_account / 10 / POSITION_ROW.len() as u64;
        FlexGen::new(accounts, trades, positions)
    }

    /// The number of trade and position rows per account.
    pub fn rows(&self) -> (u64, u64) {
        (self.segments[2].1, self.segments[4].1)
    }

    /// Total length of the document in bytes.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|(b, n)| b.len() as u64 * n).sum()
    }
}

impl Read for FlexGen {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut written = 0;
        while written < out.len() && self.seg < self.segments.len() {
            let (bytes, reps) = &self.segments[self.seg];
            if self.rep >= *reps {
                self.seg += 1;
                self.rep = 0;
                continue;
            }
            let n = (bytes.len() - self.off).min(out.len() - written);
            out[written..written + n].copy_from_slice(&bytes[self.off..self.off + n]);
            written += n;
            self.off += n;
            if self.off == bytes.len() {
                self.off = 0;
                self.rep += 1;
            }
        }
        Ok(written)
    }
}
