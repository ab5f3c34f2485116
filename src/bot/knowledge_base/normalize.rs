//! Text normalisation before matching, and the bilingual term list.
//!
//! Visitors write the same thing many ways: full-width letters and digits from a Chinese input
//! method, colloquial Chinese (咋 for 怎么, 啥 for 什么, 能不能 for 能否), a few traditional
//! characters, English and Chinese words in one message. [`normalize`] folds the first three into
//! one form, on entries and messages alike, so they meet in the index.
//!
//! The term list ([`TermList`]) joins words that mean the same across languages or registers
//! ("shipping", "运费", "邮费"): a text holding any term of a group also gets the group's own
//! feature, so "shipping费多少" meets "运费怎么算？". A built-in list covers common shop and
//! hospitality words and general customer-service words (paying, delivery, returns, accounts,
//! contact, opening hours, getting around, faults, subscriptions, appointments, courses, dining,
//! travel), written from general knowledge rather than from any one knowledge base; each site adds its own groups in its bot settings (one group a line,
//! terms separated by `=`).

/// Colloquial or variant spellings and what they become, longest first so "咋整" is not read as
/// "咋" then "整". A-不-A questions (能不能, 远不远) are folded by [`fold_a_not_a`] before these.
const COLLOQUIAL: &[(&str, &str)] = &[
    ("可不可以", "可以"),
    ("有没有", "有"),
    ("多长时间", "多久"),
    ("啥时候", "什么时候"),
    ("咋整", "怎么办"),
    ("咋办", "怎么办"),
    ("咋弄", "怎么办"),
    ("能否", "能"),
    ("可否", "能"),
    ("哪儿", "哪里"),
    ("早饭", "早餐"),
    ("咋", "怎么"),
    ("啥", "什么"),
    ("搁", "放"),
];

/// Internet spellings and more colloquial forms, and greetings that say nothing of the question
/// (dropped), tried before [`COLLOQUIAL`].
const INTERNET_SPELLINGS: &[(&str, &str)] = &[
    ("有木有", "有"),
    ("木有", "没有"),
    ("神马", "什么"),
    ("肿么", "怎么"),
    ("咋样", "怎么样"),
    ("咋回事", "怎么回事"),
    ("为啥", "为什么"),
    ("干啥", "做什么"),
    ("多会儿", "什么时候"),
    ("几时", "什么时候"),
    ("多少天", "几天"),
    ("咋滴", "怎么"),
    ("怎么弄", "怎么办"),
    ("怎么整", "怎么办"),
    ("整么", "怎么"),
    ("造吗", "知道吗"),
    ("童鞋", "同学"),
    ("小哥哥", ""),
    ("小姐姐", ""),
    ("在吗", ""),
    ("你好", ""),
    ("您好", ""),
    ("请问", ""),
    ("麻烦", ""),
    ("谢谢", ""),
    ("亲亲", ""),
];

/// Common traditional characters and their simplified forms, enough for FAQ-style questions.
const TRADITIONAL: &[(char, char)] = &[
    ('這', '这'),
    ('個', '个'),
    ('們', '们'),
    ('麼', '么'),
    ('嗎', '吗'),
    ('運', '运'),
    ('費', '费'),
    ('貨', '货'),
    ('發', '发'),
    ('單', '单'),
    ('號', '号'),
    ('幾', '几'),
    ('時', '时'),
    ('間', '间'),
    ('問', '问'),
    ('換', '换'),
    ('還', '还'),
    ('郵', '邮'),
    ('會', '会'),
    ('員', '员'),
    ('點', '点'),
    ('優', '优'),
    ('碼', '码'),
    ('帳', '账'),
    ('賬', '账'),
    ('訂', '订'),
    ('購', '购'),
    ('買', '买'),
    ('賣', '卖'),
    ('寶', '宝'),
    ('裡', '里'),
    ('請', '请'),
    ('與', '与'),
    ('務', '务'),
    ('處', '处'),
    ('無', '无'),
    ('開', '开'),
    ('關', '关'),
    ('門', '门'),
    ('張', '张'),
    ('車', '车'),
    ('場', '场'),
    ('機', '机'),
    ('過', '过'),
    ('達', '达'),
    ('遞', '递'),
    ('網', '网'),
    ('館', '馆'),
    ('餐', '餐'),
    ('歡', '欢'),
    ('樣', '样'),
    ('臺', '台'),
    ('檯', '台'),
    ('壞', '坏'),
    ('際', '际'),
    ('說', '说'),
    ('話', '话'),
    ('證', '证'),
    ('將', '将'),
    ('錢', '钱'),
    ('轉', '转'),
    ('專', '专'),
    ('東', '东'),
    ('聯', '联'),
    ('繫', '系'),
];

/// Folds full-width forms to ASCII, lowercases, maps common traditional characters to simplified
/// ones, and rewrites colloquial Chinese to its written form.
pub fn normalize(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for character in text.chars() {
        let character = match character as u32 {
            0xFF01..=0xFF5E => char::from_u32(character as u32 - 0xFEE0).unwrap_or(character),
            0x3000 => ' ',
            _ => TRADITIONAL.iter().find(|(from, _)| *from == character).map_or(character, |(_, to)| *to),
        };
        folded.extend(character.to_lowercase());
    }
    let mut text = fold_a_not_a(&folded);
    if text.chars().any(|character| character as u32 >= 0x3400) {
        for (from, to) in INTERNET_SPELLINGS.iter().chain(COLLOQUIAL) {
            if text.contains(from) {
                text = text.replace(from, to);
            }
        }
    }
    text
}

/// "能不能" → "能", "远不远" → "远", "可不可以" stays for [`COLLOQUIAL`]: an A-不-A question means
/// the same as A with 吗. A trailing 不 as a question particle ("能用微信付不") is dropped too.
fn fold_a_not_a(text: &str) -> String {
    let characters: Vec<char> = text.chars().collect();
    let mut folded = String::with_capacity(text.len());
    let mut position = 0;
    while position < characters.len() {
        let character = characters[position];
        let is_question = super::matcher::is_cjk(character)
            && characters.get(position + 1) == Some(&'不')
            && characters.get(position + 2) == Some(&character);
        if is_question {
            folded.push(character);
            position += 3;
            continue;
        }
        let ends_a_question = character == '不'
            && position >= 2
            && characters.get(position + 1).is_none_or(|next| "?？!！。. ".contains(*next));
        if !ends_a_question {
            folded.push(character);
        }
        position += 1;
    }
    folded
}

/// Groups of terms that mean the same, built in: common shop and hospitality words in English
/// and Chinese. A site's own groups come on top (bot settings, `terms`).
const BUILT_IN_TERMS: &[&str] = &[
    "shipping = shipping fee = shipping cost = delivery fee = delivery charge = postage = 运费 = 邮费 = 包邮",
    "ship = dispatch = 发货 = 寄出 = 发出",
    "delivery = deliver = arrive = 送达 = 到货 = 几天到 = 多久到",
    "track = tracking = 物流 = 快递单号 = 查快递",
    "order = 订单 = 单子",
    "parcel = package = 包裹 = 快递",
    "return = 退货 = 退回",
    "refund = reimbursement = money back = 退款 = 退钱",
    "exchange = swap = 换货",
    "cancel = 取消 = 撤销",
    "address = 地址",
    "invoice = receipt = vat = 发票 = 开票 = 收据",
    "pay = payment = 付款 = 支付 = 付钱",
    "paypal = 贝宝",
    "coupon = promo code = discount code = voucher = 优惠券 = 优惠码 = 折扣码",
    "discount = 折扣 = 优惠",
    "warranty = guarantee = 保修 = 质保 = 保修期",
    "damaged = broken = cracked = 破损 = 坏了 = 损坏 = 碎了",
    "password = 密码",
    "account = 账号 = 账户",
    "gift = present = 礼物 = 礼品",
    "size = 尺码 = 码数",
    "color = colour = 颜色",
    "customer service = support = 客服",
    "international = overseas = abroad = 国际 = 海外",
    "check in = check-in = checkin = 入住",
    "check out = check-out = checkout = 退房",
    "breakfast = 早餐",
    "parking = park = 停车 = 车位",
    "airport = 机场",
    "shuttle = pickup = pick up = 接送 = 接机",
    "booking = reservation = 预订 = 订房",
    "pet = pets = dog = cat = 宠物 = 狗 = 猫",
    "wifi = wi-fi = wi fi = internet = 无线网 = 网络 = 上网",
    "pool = swimming = 泳池 = 游泳",
    "gym = fitness = 健身房",
    "deposit = 押金",
    "extra bed = rollaway = 加床",
    "crib = cot = 婴儿床",
    "luggage = baggage = bags = suitcase = 行李",
    "smoking = smoke = 抽烟 = 吸烟",
    "metro = subway = 地铁",
    "passport = 护照",
    "foreigner = foreign = 外国人 = 外籍",
];

/// General customer-service words in English and Chinese: buying, paying, delivery, returns,
/// accounts, contact, opening hours, stays and getting around.
const GENERAL_TERMS: &[&str] = &[
    "hours = opening hours = business hours = open = opening = 营业时间 = 营业 = 开门 = 几点开",
    "closed = closing = 关门 = 打烊 = 休息",
    "weekend = weekends = saturday = sunday = 周末 = 周六 = 周日",
    "holiday = holidays = public holiday = 节假日 = 假期 = 节日",
    "contact = reach = 联系 = 联络",
    "phone = telephone = call = phone number = hotline = 电话 = 热线 = 手机号",
    "email = e-mail = mail = 邮箱 = 邮件 = 电子邮件",
    "wechat = weixin = 微信",
    "alipay = 支付宝",
    "credit card = debit card = visa = mastercard = 信用卡 = 银行卡 = 刷卡",
    "cash = 现金",
    "installment = installments = pay later = 分期 = 花呗",
    "currency = dollar = dollars = usd = rmb = yuan = 币种 = 美元 = 人民币",
    "tax = taxes = duty = duties = customs = vat = 税 = 关税 = 税费",
    "price = prices = cost = costs = 价格 = 价钱 = 多少钱",
    "free = free of charge = complimentary = no charge = 免费 = 不要钱 = 不收费",
    "cheap = cheaper = discount = sale = 便宜 = 打折 = 特价 = 促销",
    "stock = in stock = out of stock = available = availability = sold out = 有货 = 现货 = 库存 = 缺货 = 售罄 = 补货",
    "product = products = item = items = goods = merchandise = 商品 = 产品 = 东西 = 宝贝",
    "buy = purchase = 购买 = 买",
    "place an order = 下单",
    "member = membership = vip = 会员",
    "points = reward points = loyalty = rewards = 积分",
    "login = log in = sign in = 登录 = 登陆",
    "register = sign up = create an account = 注册",
    "change = modify = edit = update = 修改 = 更改 = 变更 = 更换",
    "receive = received = 收到 = 签收 = 收货",
    "late = delay = delayed = 延迟 = 晚到 = 延误",
    "early = earlier = 提前",
    "missing = lost = 丢失 = 丢件 = 少件 = 漏发",
    "wrong item = wrong product = 发错 = 错发",
    "defect = defective = faulty = quality = 质量 = 瑕疵 = 次品 = 质量问题",
    "repair = fix = 维修 = 修理",
    "replace = replacement = 补发 = 更换",
    "send back = 寄回 = 退回",
    "express = expedited = overnight = 加急 = 特快",
    "tracking number = 运单号 = 单号",
    "after-sales = after sales = 售后",
    "wrapping = wrap = gift wrap = 包装",
    "store = shop = physical store = 门店 = 实体店 = 店铺",
    "website = site = app = 网站 = 官网",
    "room = rooms = 房间 = 客房",
    "night = nights = per night = 每晚 = 一晚",
    "child = children = kid = kids = 儿童 = 小孩 = 孩子",
    "adult = adults = 成人 = 大人",
    "restaurant = dining = 餐厅",
    "lunch = 午餐 = 午饭",
    "dinner = 晚餐 = 晚饭",
    "towel = towels = 毛巾",
    "laundry = 洗衣",
    "air conditioning = air conditioner = ac = 空调",
    "elevator = lift = 电梯",
    "wheelchair = accessible = accessibility = disabled = 无障碍 = 轮椅",
    "upgrade = 升级",
    "taxi = cab = 出租车 = 打车",
    "bus = 公交",
    "train station = railway station = 火车站 = 高铁站 = 车站",
    "walk = walking = 步行 = 走路",
    "far = distance = near = nearby = close by = 远 = 距离 = 附近",
];

/// More general customer-service words, for any business (shops, hotels, courses, software,
/// clinics, restaurants, travel): what goes wrong, accounts and subscriptions, appointments and
/// bookings, and the plain words visitors use for them, in English and Chinese.
const SERVICE_TERMS: &[&str] = &[
    "damaged = broken = cracked = crushed = smashed = shattered = chipped = dented = torn = 破了 = 碎 = 烂 = 压坏 = 摔坏",
    "not working = stopped working = doesnt work = does not work = dead = malfunction = 不工作 = 不能用 = 用不了 = 失灵 = 故障 = 坏掉",
    "error = bug = glitch = crash = crashes = crashed = 报错 = 出错 = 错误 = 闪退 = 卡住",
    "subscription = subscribe = plan = 订阅 = 套餐 = 包月 = 包年",
    "trial = free trial = 试用 = 体验",
    "unsubscribe = opt out = 退订",
    "renew = renewal = auto-renew = auto renew = 续费 = 续订 = 自动续费",
    "monthly = per month = a month = 每月 = 月费 = 按月",
    "yearly = annual = annually = per year = a year = 每年 = 年费 = 按年",
    "charged twice = double charged = charged double = 重复扣款 = 扣了两次 = 多扣",
    "charge = charged = billed = deducted = 扣款 = 扣费 = 扣钱",
    "bill = billing = statement = 账单",
    "verification code = verification = otp = 验证码",
    "username = user name = 用户名",
    "forgot = forget = forgotten = dont remember = 忘记 = 忘了",
    "reset = 重置 = 找回",
    "delete account = close account = 注销",
    "download = 下载",
    "install = installation = setup = set up = 安装",
    "device = devices = phone = tablet = computer = laptop = 设备 = 手机 = 平板 = 电脑",
    "certificate = certification = 证书 = 结业证",
    "course = courses = lesson = lessons = 课程 = 课 = 课堂",
    "teacher = instructor = tutor = 老师 = 讲师 = 教师",
    "student = students = 学生",
    "appointment = book an appointment = schedule = 预约 = 挂号",
    "reschedule = change the date = postpone = 改期 = 改约 = 延期",
    "doctor = physician = 医生 = 大夫",
    "insurance = insured = 保险 = 医保",
    "prescription = 处方",
    "menu = 菜单",
    "vegetarian = vegan = 素食 = 吃素",
    "allergy = allergic = allergies = gluten = 过敏",
    "takeaway = take away = takeout = take out = 外卖 = 打包 = 外带",
    "table = 桌 = 座位",
    "seat = seats = seating = 座位 = 位子",
    "flight = flights = plane = 航班 = 飞机",
    "ticket = tickets = 门票 = 车票 = 机票",
    "visa = 签证",
    "itinerary = 行程",
    "group = groups = team = 团体 = 团队 = 多人",
    "age = years old = 年龄 = 岁",
    "baby = infant = toddler = 婴儿 = 宝宝",
    "senior = elderly = 老人 = 老年人",
    "confirm = confirmation = confirmed = 确认",
    "weight = heavy = kg = 重量 = 公斤 = 斤",
    "contract = agreement = terms = 合同 = 协议 = 条款",
    "privacy = personal data = personal information = 隐私 = 个人信息",
    "complaint = complain = 投诉 = 抱怨",
    "feedback = review = reviews = 评价 = 反馈",
    "language = english = chinese = 语言 = 英文 = 中文",
    "location = located = 位置 = 地点 = 在哪里",
    "today = same day = 今天 = 当天",
    "tomorrow = 明天",
    "evening = tonight = 晚上 = 夜里 = 夜间",
    "morning = 上午 = 早上",
    "money = 钱 = 款",
    "card = cards = credit card = debit card = bank card = 银行卡 = 信用卡 = 储蓄卡",
];

/// Groups of equivalent terms; every group is one extra feature.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TermList {
    /// Per group, its terms, normalised.
    groups: Vec<Vec<String>>,
}

impl TermList {
    /// The built-in groups plus a site's own (`site_lines`: one group a line, `a = b = c`).
    pub fn with_site_terms(site_lines: &str) -> TermList {
        let mut groups = Vec::new();
        for line in BUILT_IN_TERMS.iter().chain(GENERAL_TERMS).chain(SERVICE_TERMS).copied().chain(site_lines.lines()) {
            let terms: Vec<String> =
                line.split('=').map(|term| normalize(term.trim())).filter(|term| !term.is_empty()).collect();
            if terms.len() >= 2 {
                groups.push(terms);
            }
        }
        TermList { groups }
    }

    /// Calls `visit` with the group number of every group a normalised text holds a term of.
    pub fn for_each_group(&self, normalized: &str, visit: &mut impl FnMut(usize)) {
        for (number, terms) in self.groups.iter().enumerate() {
            if terms.iter().any(|term| holds_term(normalized, term)) {
                visit(number);
            }
        }
    }
}

/// Whether a normalised text holds a term: anywhere for Chinese, as whole words for Latin
/// script (so "cat" is not found in "location"); a Latin term may also end in "s"/"es"/"ed"/"ing".
fn holds_term(text: &str, term: &str) -> bool {
    if term.chars().next().is_some_and(super::matcher::is_cjk) {
        return text.contains(term);
    }
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = text[from..].find(term) {
        let start = from + found;
        let end = start + term.len();
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let rest = &text[end..];
        let tail = rest.bytes().take_while(u8::is_ascii_alphanumeric).count();
        let after_ok = tail == 0 || ["s", "es", "ed", "ing", "d", "led", "ling"].contains(&&rest[..tail]);
        if before_ok && after_ok {
            return true;
        }
        from = start + term.len().max(1);
        if from >= text.len() {
            break;
        }
    }
    false
}

/// Checks a site's term lines; the message names the line to fix.
pub fn validate_terms(site_lines: &str) -> Result<(), String> {
    if site_lines.chars().count() > 20_000 {
        return Err("terms: at most 20000 characters".into());
    }
    for (number, line) in site_lines.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let terms: Vec<&str> = line.split('=').map(str::trim).collect();
        if terms.len() < 2 || terms.iter().any(|term| term.is_empty() || term.chars().count() > 50) {
            return Err(format!(
                "terms: line {} must be two or more terms of 1 to 50 characters separated by =",
                number + 1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colloquial_and_full_width_text_is_folded() {
        assert_eq!(normalize("运费咋算"), "运费怎么算");
        assert_eq!(normalize("啥时候发货"), "什么时候发货");
        assert_eq!(normalize("能不能退货"), "能退货");
        assert_eq!(normalize("地铁站远不远啊"), "地铁站远啊");
        assert_eq!(normalize("能用微信付不"), "能用微信付");
        assert_eq!(normalize("ＷＩＦＩ密碼"), "wifi密码");
        assert_eq!(normalize("運費多少"), "运费多少");
        assert_eq!(normalize("Can I Return it?"), "can i return it?");
        assert_eq!(normalize("有木有发票"), "有发票");
        assert_eq!(normalize("神马时候发货"), "什么时候发货");
        assert_eq!(normalize("肿么退货"), "怎么退货");
        assert_eq!(normalize("你好，请问运费多少"), ",运费多少");
    }

    #[test]
    fn terms_match_whole_words_or_chinese_substrings() {
        let terms = TermList::with_site_terms("sofa = 沙发\n");
        let mut found = Vec::new();
        terms.for_each_group(&normalize("shipping费多少"), &mut |group| found.push(group));
        let mut expected = Vec::new();
        terms.for_each_group(&normalize("运费怎么算"), &mut |group| expected.push(group));
        assert!(found.iter().any(|group| expected.contains(group)), "{found:?} {expected:?}");
        let mut none = Vec::new();
        terms.for_each_group("relocation", &mut |group| none.push(group));
        assert!(none.is_empty(), "{none:?}");
        let mut site = Vec::new();
        terms.for_each_group("沙发多大", &mut |group| site.push(group));
        assert_eq!(site.len(), 1);
        assert!(holds_term("refunds please", "refund") && holds_term("cancelled", "cancel"));
        // General service words meet across languages and registers.
        let groups = |text: &str| {
            let mut found = Vec::new();
            terms.for_each_group(&normalize(text), &mut |group| found.push(group));
            found
        };
        let broken = groups("my headphones stopped working");
        assert!(groups("耳机用不了了").iter().any(|group| broken.contains(group)));
        let renewal = groups("turn off auto-renew");
        assert!(groups("怎么关闭自动续费").iter().any(|group| renewal.contains(group)));
    }

    #[test]
    fn bad_term_lines_are_named() {
        assert!(validate_terms("a = b\n\nc = d = e").is_ok());
        assert!(validate_terms("just one").unwrap_err().contains("line 1"));
        assert!(validate_terms("a = b\nx = ").unwrap_err().contains("line 2"));
    }
}
